from services.generator.generator import main

main()
