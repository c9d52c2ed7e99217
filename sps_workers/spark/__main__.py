"""``python -m sps_workers.spark --config <json | @file>``: the Spark Structured Streaming worker
(see the package docstring, sps_workers.spark, for how it maps onto Spark and its knobs)."""

from sps_workers.spark.driver import main

main()
