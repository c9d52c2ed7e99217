from sps_workers.bytewax.worker import main

main()
