import ArgumentParser
import ComityAPI
import ComityClient
import ComityCore

/// `comity projects add NAME --partner NAME [--shares N]`, `comity projects [list]`.
struct ProjectsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "projects",
        abstract: "Manage projects: the groups of a partner that submit jobs.",
        subcommands: [List.self, Add.self],
        defaultSubcommand: List.self
    )

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Add a project.", aliases: ["create"])

        @Argument(help: ArgumentHelp("The project's name, e.g. swahili-asr.", valueName: "name"))
        var name: String

        @Option(help: ArgumentHelp("The partner the project belongs to.", valueName: "name"))
        var partner: String

        @Option(help: ArgumentHelp("What the project is for, e.g. health-research (datasets may require a purpose).", valueName: "purpose"))
        var purpose: String?

        @Flag(help: "The project is commercial (datasets marked non-commercial refuse it).")
        var commercial = false

        @Option(help: ArgumentHelp("Within its partner, projects share in proportion to these (1 to 10000; default 1).", valueName: "n"))
        var shares: Int?

        @OptionGroup(title: "Global Options")
        var global: GlobalOptions

        func validate() throws {
            if let shares, !(1...10_000).contains(shares) { throw ValidationError("--shares: expected a whole number from 1 to 10000, got \(shares)") }
        }

        func run() async throws {
            let added = try await global.client().addProject(
                Project(name: name, partner: partner, purpose: purpose, commercial: commercial, shares: shares))
            if global.isJSON { return try Terminal.json(added) }
            Terminal.out("added project \(added.name) of partner \(added.partner)")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List projects.")

        @OptionGroup(title: "Global Options")
        var global: GlobalOptions

        func run() async throws {
            let projects = try await global.client().projects()
            if global.isJSON { return try Terminal.json(projects) }
            var table = Table("NAME", "PARTNER", "PURPOSE", "COMMERCIAL", "SHARES")
            for project in projects {
                table.append(project.name, project.partner, project.purpose ?? "", project.commercial == true ? "yes" : "no", String(project.shares ?? 1))
            }
            table.print(empty: "no projects")
        }
    }
}
