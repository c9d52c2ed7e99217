from sps_workers.faust.worker import main

main()
