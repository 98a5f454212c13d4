import ArgumentParser
import ComityAPI
import ComityClient
import ComityCore
import Foundation

/// `comity hosts [list]`, `comity hosts join-token`.
struct HostsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hosts",
        abstract: "List hosts, or create a join token to enroll one.",
        subcommands: [List.self, JoinToken.self],
        defaultSubcommand: List.self
    )

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the hosts of the pool.")

        @OptionGroup(title: "Global Options")
        var global: GlobalOptions

        func run() async throws {
            let hosts = try await global.client().hosts()
            if global.isJSON { return try Terminal.json(hosts) }
            let now = Date()
            var table = Table(
                "NAME", "PARTNER", "REGION", "STATE", "RUNNER", "CPUS", "MEMORY", "GPUS", "JOBS", "HEARTBEAT"
            )
            for host in hosts {
                table.append(
                    host.name,
                    host.partner,
                    host.region,
                    host.state.rawValue,
                    host.runnerText,
                    host.cpuText,
                    host.memoryText,
                    host.gpuText,
                    String(host.runningAttempts),
                    host.lastHeartbeat.map { TimeText.relative($0, now: now) } ?? "never"
                )
            }
            table.print(empty: "no hosts")
            let notes = hosts.flatMap { host in (host.resources.runtime?.notes ?? []).map { "  \(host.name): \($0)" } }
            if !notes.isEmpty {
                Terminal.out("")
                Terminal.out("Notes:")
                for line in notes { Terminal.out(line) }
            }
        }
    }

    struct JoinToken: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "join-token",
            abstract: "Create a one-time token with which an agent enrolls its host.",
            discussion: "Prints the expiry, then the token alone on the last line."
        )

        @Option(help: ArgumentHelp("The partner the host belongs to.", valueName: "name"))
        var partner: String

        @Option(help: ArgumentHelp("The region the host lives in.", valueName: "name"))
        var region: String

        @Option(
            help: ArgumentHelp(
                "How long the token stays valid unused, e.g. 24h, 30m (default 24h).",
                valueName: "duration"
            )
        )
        var ttl: String?

        @OptionGroup(title: "Global Options")
        var global: GlobalOptions

        func validate() throws {
            if let ttl, Quantity.seconds(ttl) == nil {
                throw ValidationError("--ttl: expected a duration such as 24h, 30m or 1d, got \"\(ttl)\"")
            }
        }

        func run() async throws {
            let request = CreateJoinTokenRequest(
                partner: partner,
                region: region,
                ttlSeconds: ttl.flatMap(Quantity.seconds)
            )
            let created = try await global.client().createJoinToken(request)
            if global.isJSON { return try Terminal.json(created) }
            Terminal.out(
                "join token for a host of partner \(created.partner) in region \(created.region), "
                    + "expires \(TimeText.local(created.expiresAt)) (\(TimeText.relative(created.expiresAt)))"
            )
            Terminal.out(created.token)
        }
    }
}

extension HostView {
    /// The runner and what limits its jobs: `process/cg-v2`, `process (no limits)`, `sandbox`, `-` for agents older
    /// than runners.
    var runnerText: String {
        guard let runtime = resources.runtime else { return "-" }
        let runner = runtime.runner.rawValue
        if !runtime.available.contains(runtime.runner) { return "\(runner) (unavailable)" }
        switch runtime.runner {
        case .process, .sandbox:
            if let cgroups = runtime.cgroups { return "\(runner)/cg-\(cgroups)" }
            return runtime.runner == .process ? "process (no limits)" : runner
        case .slurm, .container:
            return runner
        }
    }
}
