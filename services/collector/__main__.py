from services.collector.collector import main

main()
