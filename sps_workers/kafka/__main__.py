from sps_workers.kafka.worker import main

main()
