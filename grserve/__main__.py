from grserve.cli import main

main()
