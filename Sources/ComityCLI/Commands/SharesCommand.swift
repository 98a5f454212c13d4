import ArgumentParser
import ComityAPI
import ComityClient
import ComityCore
import Foundation

/// `comity shares`, `comity shares weights`, `comity shares weight PATTERN WEIGHT|--remove`.
struct SharesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "shares",
        abstract: "Show each partner's fair share of the commons, and manage GPU weights.",
        discussion: """
            Contribution is measured from the hours a partner's hosts were up and offered, weighted per GPU model, \
            and decays with the server's half-life; entitlement is the share of contribution plus grants. A partner \
            whose factor is above 0.5 is below its entitlement, and its jobs go first.
            """,
        subcommands: [Show.self, Weights.self, Weight.self],
        defaultSubcommand: Show.self
    )

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Per partner: contributed, granted, entitled, used, holding, fair-share factor, borrowing.",
            discussion: """
                GPU-hours are weighted (an H100-hour counts its weight); contributed and used are decayed. GRANTED and \
                ENTITLED are fractions of the GPU and CPU pools; HOLDING is weighted GPUs and CPU cores held now.
                """
        )

        @OptionGroup(title: "Global Options")
        var global: GlobalOptions

        func run() async throws {
            let report = try await global.client().shares()
            if global.isJSON { return try Terminal.json(report) }
            let capacity = report.capacity
            Terminal.out(
                "pool: \(ShareText.hours(capacity.gpu)) weighted GPUs, \(ShareText.hours(capacity.cpu)) CPUs, "
                    + "\(ShareText.hours(capacity.memory)) GiB; half-life \(Quantity.formatSeconds(report.halfLifeSeconds)); "
                    + "accounted \(TimeText.detailed(report.accountedAt) ?? "-")")
            var table = Table(
                "PARTNER", "CONTRIB GPU-H", "CONTRIB CPU-H", "GRANTED GPU/CPU", "ENTITLED GPU/CPU", "USED GPU-H", "USED CPU-H",
                "HOLDING GPU/CPU", "FACTOR", "BORROWING")
            for share in report.partners {
                let granted = share.granted == .zero ? "-" : "\(ShareText.percent(share.granted.gpu))/\(ShareText.percent(share.granted.cpu))"
                table.append(
                    share.partner,
                    ShareText.hours(share.contributed.gpu),
                    ShareText.hours(share.contributed.cpu),
                    granted,
                    "\(ShareText.percent(share.entitled.gpu))/\(ShareText.percent(share.entitled.cpu))",
                    ShareText.hours(share.used.gpu),
                    ShareText.hours(share.used.cpu),
                    "\(ShareText.number(share.holding.gpu, decimals: 1))/\(ShareText.number(share.holding.cpu, decimals: 1))",
                    String(format: "%.2f", share.factor),
                    share.borrowing ? "yes" : "no"
                )
            }
            table.print(empty: "no partners")
        }
    }

    struct Weights: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List GPU weights: how much one GPU of a model counts against a plain GPU's 1.",
            discussion: "A weight applies to every GPU whose model contains its pattern, case-insensitively; the longest pattern wins."
        )

        @OptionGroup(title: "Global Options")
        var global: GlobalOptions

        func run() async throws {
            let weights = try await global.client().gpuWeights()
            if global.isJSON { return try Terminal.json(weights) }
            var table = Table("PATTERN", "WEIGHT")
            for weight in weights { table.append(weight.pattern, ShareText.number(weight.weight, decimals: 3)) }
            table.print(empty: "no GPU weights (every GPU weighs 1)")
        }
    }

    struct Weight: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Set the weight of GPUs whose model contains PATTERN (admins), or remove it with --remove.",
            discussion: "Example: comity shares weight H100 4. Hours accounted from now on use the new weight."
        )

        @Argument(help: ArgumentHelp("A name the GPU model contains, case-insensitively (H100, L4).", valueName: "pattern"))
        var pattern: String

        @Argument(help: ArgumentHelp("What one such GPU counts for, above 0 and at most 1000 (a plain GPU is 1).", valueName: "weight"))
        var weight: Double?

        @Flag(help: "Remove the weight: such GPUs weigh 1 again (or what a shorter pattern says).")
        var remove = false

        @OptionGroup(title: "Global Options")
        var global: GlobalOptions

        func validate() throws {
            switch (weight, remove) {
            case (nil, false): throw ValidationError("expected a weight (e.g. comity shares weight \(pattern) 4) or --remove")
            case (_?, true): throw ValidationError("--remove: give a weight or --remove, not both")
            case (let weight?, false):
                guard weight > 0, weight <= 1000, weight.isFinite else {
                    throw ValidationError("<weight>: expected a number above 0 and at most 1000 (a plain GPU weighs 1), got \(weight)")
                }
            case (nil, true): break
            }
            guard !pattern.trimmingCharacters(in: .whitespaces).isEmpty, pattern.count <= 100 else {
                throw ValidationError("<pattern>: expected 1 to 100 characters of a GPU model such as H100, got \"\(pattern)\"")
            }
        }

        func run() async throws {
            let client = try global.client()
            guard let weight else {
                try await client.removeGPUWeight(pattern)
                if global.isJSON { return try Terminal.json(RemovedWeight(pattern: pattern, removed: true)) }
                return Terminal.out("removed the weight of GPUs matching \(pattern)")
            }
            let set = try await client.setGPUWeight(pattern, weight: weight)
            if global.isJSON { return try Terminal.json(set) }
            Terminal.out("GPUs matching \(set.pattern) weigh \(ShareText.number(set.weight, decimals: 3))")
        }

        struct RemovedWeight: Encodable {
            var pattern: String
            var removed: Bool
        }
    }
}
