import ComityCLI

await Comity.main()
