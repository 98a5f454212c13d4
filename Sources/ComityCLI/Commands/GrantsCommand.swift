import ArgumentParser
import ComityAPI
import ComityClient
import ComityCore
import Foundation

/// `comity grants add|list|revoke`: shares of a pool given to a partner regardless of its hardware.
struct GrantsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "grants",
        abstract: "Give partners a share of a pool regardless of their hardware (e.g. 2% of the GPUs to a lab without any).",
        discussion: "A partner's entitlement is its share from contribution plus its grants. Admins give and revoke grants.",
        subcommands: [List.self, Add.self, Revoke.self],
        defaultSubcommand: List.self
    )

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Give a partner a share of the GPU, CPU or memory pool (replaces its grant of that kind).",
            discussion: "Example: comity grants add uon-lab --kind gpu --share 2% --reason \"no hardware yet\""
        )

        @Argument(help: ArgumentHelp("The partner.", valueName: "partner"))
        var partner: String

        @Option(help: "The pool: gpu, cpu or memory.")
        var kind: ResourceKind

        @Option(help: ArgumentHelp("The share of the pool, above 0 and at most 100%: 2% or 0.02.", valueName: "share"))
        var share: String

        @Option(help: ArgumentHelp("Why, for the record (at most 500 characters).", valueName: "text"))
        var reason: String?

        @OptionGroup(title: "Global Options")
        var global: GlobalOptions

        func validate() throws {
            _ = try ShareText.fraction(share, option: "--share", allowNone: false, lowerOpen: true)
            if let reason, reason.count > 500 { throw ValidationError("--reason: expected at most 500 characters, got \(reason.count)") }
        }

        func run() async throws {
            let fraction = try ShareText.fraction(share, option: "--share", allowNone: false, lowerOpen: true) ?? 0
            let grant = try await global.client().addGrant(GrantRequest(partner: partner, kind: kind, fraction: fraction, reason: reason))
            if global.isJSON { return try Terminal.json(grant) }
            Terminal.out("grant \(grant.id): \(grant.partner) gets \(ShareText.percent(grant.fraction)) of the \(grant.kind.rawValue) pool")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List active grants (with --all, revoked ones too).")

        @Flag(help: "Also list revoked grants.")
        var all = false

        @OptionGroup(title: "Global Options")
        var global: GlobalOptions

        func run() async throws {
            let grants = try await global.client().grants(includeRevoked: all)
            if global.isJSON { return try Terminal.json(grants) }
            var headers = ["ID", "PARTNER", "KIND", "SHARE", "BY", "CREATED"]
            if all { headers.append("REVOKED") }
            headers.append("REASON")
            var table = Table()
            table.headers = headers
            for grant in grants {
                var row = [
                    String(grant.id), grant.partner, grant.kind.rawValue, ShareText.percent(grant.fraction), grant.createdBy,
                    TimeText.local(grant.createdAt),
                ]
                if all { row.append(grant.revokedAt.map(TimeText.local) ?? "-") }
                row.append(grant.reason)
                table.append(row: row)
            }
            table.print(empty: all ? "no grants" : "no active grants")
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke an active grant (by the id `grants list` prints).")

        @Argument(help: ArgumentHelp("The grant's id.", valueName: "id"))
        var id: Int64

        @OptionGroup(title: "Global Options")
        var global: GlobalOptions

        func run() async throws {
            try await global.client().revokeGrant(id)
            if global.isJSON { return try Terminal.json(Revoked(id: id, revoked: true)) }
            Terminal.out("revoked grant \(id)")
        }

        struct Revoked: Encodable {
            var id: Int64
            var revoked: Bool
        }
    }
}
