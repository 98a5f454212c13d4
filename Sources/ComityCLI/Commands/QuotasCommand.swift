import ArgumentParser
import ComityAPI
import ComityClient
import ComityCore
import Foundation

/// `comity quotas set|show|remove|lending`: hard limits, and partners' borrowing and lending limits.
struct QuotasCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "quotas",
        abstract: "Manage hard quotas (GPUs, CPUs, memory held at once) and partners' borrowing and lending limits.",
        discussion: """
            A job that would go over a quota waits with reason QUOTA in `comity why`. Admins set any quota; a partner \
            admin sets its own projects' quotas and its own hosts' lending limit.
            """,
        subcommands: [Show.self, SetQuota.self, Remove.self, Lending.self],
        defaultSubcommand: Show.self
    )

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List the quotas in this token's scope, each limit as held/limit (- is unlimited).")

        @OptionGroup(title: "Global Options")
        var global: GlobalOptions

        func run() async throws {
            let quotas = try await global.client().quotas()
            if global.isJSON { return try Terminal.json(quotas) }
            var table = Table("ID", "SCOPE", "SUBJECT", "PARTNER", "REGION", "GPUS", "CPUS", "MEMORY", "SET BY", "SET")
            for quota in quotas {
                let cpus = { (millis: Int) in ShareText.number(Double(millis) / 1000, decimals: 3) }
                table.append(
                    String(quota.id),
                    quota.scope.rawValue,
                    quota.subject,
                    quota.partner,
                    quota.region ?? "all",
                    "\(quota.holding.gpus)/\(quota.gpus.map(String.init) ?? "-")",
                    "\(cpus(quota.holding.cpuMillis))/\(quota.cpuMillis.map(cpus) ?? "-")",
                    "\(Quantity.formatBytes(quota.holding.memoryBytes))/\(quota.memoryBytes.map(Quantity.formatBytes) ?? "-")",
                    quota.setBy,
                    TimeText.local(quota.setAt)
                )
            }
            table.print(empty: "no quotas")
        }
    }

    struct SetQuota: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "set",
            abstract: "Set the quota of a partner or a project (everywhere, or in one region), replacing the one there is.",
            discussion: "Limits left out are unlimited. Example: comity quotas set --project swahili-asr --gpus 8 --memory 512Gi"
        )

        @Option(help: ArgumentHelp("The partner the quota limits (admins).", valueName: "name"))
        var partner: String?

        @Option(help: ArgumentHelp("The project the quota limits.", valueName: "name"))
        var project: String?

        @Option(help: ArgumentHelp("Count only what runs on hosts of this region.", valueName: "name"))
        var region: String?

        @Option(help: ArgumentHelp("GPUs held at once.", valueName: "n"))
        var gpus: Int?

        @Option(help: ArgumentHelp("CPUs held at once (fractions allowed: 0.5).", valueName: "n"))
        var cpus: String?

        @Option(help: ArgumentHelp("Memory held at once (64Gi, 512Mi).", valueName: "size"))
        var memory: String?

        @OptionGroup(title: "Global Options")
        var global: GlobalOptions

        func validate() throws {
            switch (partner, project) {
            case (nil, nil): throw ValidationError("expected --partner NAME or --project NAME: the quota's subject")
            case (_?, _?): throw ValidationError("--partner and --project are alternatives; give one")
            default: break
            }
            if gpus == nil, cpus == nil, memory == nil { throw ValidationError("expected at least one limit: --gpus, --cpus or --memory") }
            if let gpus, !(0...100_000).contains(gpus) { throw ValidationError("--gpus: expected a count from 0 to 100000, got \(gpus)") }
            if let cpus {
                guard let value = Double(cpus.trimmingCharacters(in: .whitespaces)), value >= 0, value <= 2_000_000 else {
                    throw ValidationError("--cpus: expected a CPU count from 0 to 2000000 such as 64 or 0.5, got \"\(cpus)\"")
                }
            }
            if let memory, Quantity.bytes(memory) == nil {
                throw ValidationError("--memory: expected a size such as 512Gi or 64Gi, got \"\(memory)\"")
            }
        }

        func run() async throws {
            let request = QuotaRequest(
                scope: partner == nil ? .project : .partner, subject: partner ?? project ?? "", region: region, gpus: gpus, cpus: cpus, memory: memory)
            let quota = try await global.client().setQuota(request)
            if global.isJSON { return try Terminal.json(quota) }
            var limits: [String] = []
            if let gpus = quota.gpus { limits.append("\(gpus) GPUs") }
            if let millis = quota.cpuMillis { limits.append("\(ShareText.number(Double(millis) / 1000, decimals: 3)) CPUs") }
            if let bytes = quota.memoryBytes { limits.append("\(Quantity.formatBytes(bytes)) of memory") }
            Terminal.out(
                "quota \(quota.id): \(quota.scope.rawValue) \(quota.subject)" + (quota.region.map { " in \($0)" } ?? "") + " may hold "
                    + limits.joined(separator: ", ") + " at once")
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove a quota (by the id `quotas show` prints).")

        @Argument(help: ArgumentHelp("The quota's id.", valueName: "id"))
        var id: Int64

        @OptionGroup(title: "Global Options")
        var global: GlobalOptions

        func run() async throws {
            try await global.client().removeQuota(id)
            if global.isJSON { return try Terminal.json(Removed(id: id, removed: true)) }
            Terminal.out("removed quota \(id)")
        }

        struct Removed: Encodable {
            var id: Int64
            var removed: Bool
        }
    }

    struct Lending: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show or set a partner's borrowing and lending limits.",
            discussion: """
                --borrow-limit: how much of each pool the partner may hold beyond its entitlement (admins). \
                --lend-limit: how much of the partner's own hosts' capacity guests may hold at once. Each takes a \
                percentage (20%), a fraction (0.2) or none (unlimited). --non-reclaimable lets the partner's hosts take \
                inference services as guests that are never reclaimed; --reclaimable undoes it. Limits not given keep \
                their value; with none given, the current limits are printed.
                """
        )

        enum Reclaim: String, EnumerableFlag {
            case nonReclaimable
            case reclaimable

            static func help(for value: Reclaim) -> ArgumentHelp? {
                switch value {
                case .nonReclaimable: "Lend to inference services as guests that are never reclaimed."
                case .reclaimable: "Stop lending non-reclaimable capacity."
                }
            }
        }

        @Argument(help: ArgumentHelp("The partner.", valueName: "partner"))
        var partner: String

        @Option(help: ArgumentHelp("Fraction of each pool it may hold beyond its entitlement: 20%, 0.2 or none.", valueName: "limit"))
        var borrowLimit: String?

        @Option(help: ArgumentHelp("Fraction of its own hosts' capacity guests may hold: 50%, 0.5 or none.", valueName: "limit"))
        var lendLimit: String?

        @Flag(exclusivity: .exclusive)
        var reclaim: Reclaim?

        @OptionGroup(title: "Global Options")
        var global: GlobalOptions

        func validate() throws {
            if let borrowLimit { _ = try ShareText.fraction(borrowLimit, option: "--borrow-limit", allowNone: true) }
            if let lendLimit { _ = try ShareText.fraction(lendLimit, option: "--lend-limit", allowNone: true) }
        }

        func run() async throws {
            let client = try global.client()
            // The request replaces all three settings: start from the current ones so that options left out keep theirs.
            let current = try await client.shares().partners.first { $0.partner == partner }
            var request = LendingRequest(
                borrowLimit: current?.borrowLimit, lendLimit: current?.lendLimit, lendsNonReclaimable: current?.lendsNonReclaimable ?? false)
            if borrowLimit == nil, lendLimit == nil, reclaim == nil {
                guard current != nil else { throw CommandFailure(message: "no partner named \(partner)", exitCode: ExitStatus.notFound) }
                if global.isJSON { return try Terminal.json(request) }
                return Self.print(partner, request)
            }
            if let borrowLimit { request.borrowLimit = try ShareText.fraction(borrowLimit, option: "--borrow-limit", allowNone: true) }
            if let lendLimit { request.lendLimit = try ShareText.fraction(lendLimit, option: "--lend-limit", allowNone: true) }
            if let reclaim { request.lendsNonReclaimable = reclaim == .nonReclaimable }
            let set = try await client.setLending(partner: partner, request)
            if global.isJSON { return try Terminal.json(set) }
            Self.print(partner, set)
        }

        static func print(_ partner: String, _ limits: LendingRequest) {
            var details = Details()
            details.append("partner", partner)
            details.append("borrow limit", ShareText.limit(limits.borrowLimit))
            details.append("lend limit", ShareText.limit(limits.lendLimit))
            details.append("non-reclaimable", limits.lendsNonReclaimable ? "yes (lends to inference services)" : "no")
            details.print()
        }
    }
}
