import ArgumentParser
import ComityAPI
import ComityClient
import ComityCore

/// `comity jurisdictions add CODE [--within PARENT]`, `comity jurisdictions [list]`.
struct JurisdictionsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "jurisdictions",
        abstract: "Manage jurisdictions: the legal areas data may be bound to (KE, EU ⊃ DE...).",
        subcommands: [List.self, Add.self],
        defaultSubcommand: List.self
    )

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Add a jurisdiction.")

        @Argument(help: ArgumentHelp("The jurisdiction's code, e.g. KE, EU, DE.", valueName: "code"))
        var code: String

        @Option(help: ArgumentHelp("The jurisdiction that contains this one (DE is within EU).", valueName: "parent"))
        var within: String?

        @OptionGroup(title: "Global Options")
        var global: GlobalOptions

        func run() async throws {
            let added = try await global.client().addJurisdiction(Jurisdiction(code: code, within: within))
            if global.isJSON { return try Terminal.json(added) }
            Terminal.out("added jurisdiction \(added.code)" + (added.within.map { " within \($0)" } ?? ""))
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List jurisdictions.")

        @OptionGroup(title: "Global Options")
        var global: GlobalOptions

        func run() async throws {
            let jurisdictions = try await global.client().jurisdictions()
            if global.isJSON { return try Terminal.json(jurisdictions) }
            var table = Table("CODE", "WITHIN")
            for jurisdiction in jurisdictions { table.append(jurisdiction.code, jurisdiction.within ?? "-") }
            table.print(empty: "no jurisdictions")
        }
    }
}
