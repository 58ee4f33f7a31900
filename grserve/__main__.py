from grserve.cli import main

if __name__ == "__main__":  # not again in a process spawned from this one (the catalog builder)
    main()
