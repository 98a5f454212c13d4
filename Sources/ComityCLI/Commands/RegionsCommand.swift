import ArgumentParser
import ComityAPI
import ComityClient
import ComityCore

/// `comity regions add NAME --jurisdiction CODE`, `comity regions [list]`.
struct RegionsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "regions",
        abstract: "Manage regions: places where hosts live, each in one jurisdiction.",
        subcommands: [List.self, Add.self],
        defaultSubcommand: List.self
    )

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Add a region.")

        @Argument(help: ArgumentHelp("The region's name, e.g. eu-de-1.", valueName: "name"))
        var name: String

        @Option(help: ArgumentHelp("The jurisdiction the region is in.", valueName: "code"))
        var jurisdiction: String

        @OptionGroup(title: "Global Options")
        var global: GlobalOptions

        func run() async throws {
            let added = try await global.client().addRegion(Region(name: name, jurisdiction: jurisdiction))
            if global.isJSON { return try Terminal.json(added) }
            Terminal.out("added region \(added.name) in jurisdiction \(added.jurisdiction)")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List regions.")

        @OptionGroup(title: "Global Options")
        var global: GlobalOptions

        func run() async throws {
            let regions = try await global.client().regions()
            if global.isJSON { return try Terminal.json(regions) }
            var table = Table("NAME", "JURISDICTION")
            for region in regions { table.append(region.name, region.jurisdiction) }
            table.print(empty: "no regions")
        }
    }
}
