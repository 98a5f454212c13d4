import ArgumentParser
import ComityAPI
import ComityClient
import ComityCore

/// `comity tokens create --role ROLE [--partner P] [--project P] [--name LABEL]`, `comity tokens revoke ID`.
struct TokensCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokens",
        abstract: "Manage API tokens.",
        subcommands: [Create.self, Revoke.self]
    )

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create an API token.",
            discussion: """
                Prints the role and scope, then the token alone on the last line. The token is shown only \
                this once; the server keeps only its hash.
                """
        )

        @Option(help: "The token's role.")
        var role: Role

        @Option(help: ArgumentHelp("The partner the token is scoped to (partner-admin).", valueName: "name"))
        var partner: String?

        @Option(help: ArgumentHelp("The project the token is scoped to (researcher).", valueName: "name"))
        var project: String?

        @Option(help: ArgumentHelp("A label for people reading the token list, e.g. alice-laptop.", valueName: "label"))
        var name: String?

        @OptionGroup(title: "Global Options")
        var global: GlobalOptions

        func run() async throws {
            let request = CreateTokenRequest(role: role, partner: partner, project: project, name: name)
            let created = try await global.client().createToken(request)
            if global.isJSON { return try Terminal.json(created) }
            var scope: [String] = []
            if let project = created.project { scope.append("project \(project)") }
            if let partner = created.partner { scope.append("partner \(partner)") }
            Terminal.out(
                "created \(created.role.rawValue) token \(created.id)"
                    + (scope.isEmpty ? "" : " for " + scope.joined(separator: ", "))
                    + (name.map { " (\($0))" } ?? "")
            )
            Terminal.out(created.token)
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Revoke an API token (by the id `tokens create` printed); servers stop accepting it within 10 s.")

        @Argument(help: ArgumentHelp("The token's id.", valueName: "id"))
        var id: Int64

        @OptionGroup(title: "Global Options")
        var global: GlobalOptions

        func run() async throws {
            let revoked = try await global.client().revokeToken(id)
            if global.isJSON { return try Terminal.json(revoked) }
            Terminal.out("revoked token \(revoked.id) of \(revoked.principal)")
        }
    }
}
