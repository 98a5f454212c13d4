import ArgumentParser
import ComityAPI
import ComityClient
import ComityCore

/// `comity partners add NAME --jurisdiction CODE`, `comity partners [list]`.
struct PartnersCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "partners",
        abstract: "Manage partners: the institutions that share the pool.",
        subcommands: [List.self, Add.self],
        defaultSubcommand: List.self
    )

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Add a partner.")

        @Argument(help: ArgumentHelp("The partner's name, e.g. uon.", valueName: "name"))
        var name: String

        @Option(help: ArgumentHelp("The partner's home jurisdiction.", valueName: "code"))
        var jurisdiction: String

        @Flag(help: "The partner is a company (datasets marked non-commercial refuse its projects).")
        var commercial = false

        @OptionGroup(title: "Global Options")
        var global: GlobalOptions

        func run() async throws {
            let added = try await global.client().addPartner(Partner(name: name, jurisdiction: jurisdiction, commercial: commercial))
            if global.isJSON { return try Terminal.json(added) }
            Terminal.out("added partner \(added.name) in jurisdiction \(added.jurisdiction)")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List partners.")

        @OptionGroup(title: "Global Options")
        var global: GlobalOptions

        func run() async throws {
            let partners = try await global.client().partners()
            if global.isJSON { return try Terminal.json(partners) }
            var table = Table("NAME", "JURISDICTION")
            for partner in partners { table.append(partner.name, partner.jurisdiction) }
            table.print(empty: "no partners")
        }
    }
}
