import ArgumentParser
import ComityAPI
import ComityClient
import ComityCore
import Foundation

/// `comity job ID`.
struct JobCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "job",
        abstract: "Show one job: its details and recent events.",
        discussion: """
            With --output json, prints the job object; its `state` is one of \
            \(JobState.allCases.map(\.rawValue).joined(separator: ", ")).
            """
    )

    /// How many of the latest events are shown.
    static let recentEvents = 20

    @Argument(help: ArgumentHelp("The job id.", valueName: "id"))
    var id: Int64

    @OptionGroup(title: "Global Options")
    var global: GlobalOptions

    func run() async throws {
        let client = try global.client()
        if global.isJSON { return try Terminal.json(try await client.job(id)) }
        async let events = client.events(id)
        let job = try await client.job(id)
        let now = Date()
        var details = Details()
        details.append("id", String(job.id))
        details.append("name", job.name)
        details.append("project", "\(job.project) (partner \(job.partner))")
        details.append("kind", job.kind.rawValue)
        details.append(
            "state",
            job.stateText + (job.cancelRequested && !job.state.isTerminal ? " (cancel requested)" : "")
        )
        details.append("reason", job.reason)
        details.append("exit code", job.exitCode.map(String.init))
        details.append("host", job.placement)
        details.append("gpus", job.gpuIndices.map { $0.map(String.init).joined(separator: ",") })
        details.append("attempts", String(job.attempts) + (job.attempt.map { " (current attempt id \($0))" } ?? ""))
        details.append("priority", String(job.priority))
        details.append("submitted", TimeText.detailed(job.submittedAt, now: now).map { "\($0) by \(job.submittedBy)" })
        details.append("started", TimeText.detailed(job.startedAt, now: now))
        details.append("finished", TimeText.detailed(job.finishedAt, now: now))
        details.append("command", job.spec.command.shellQuoted)
        details.append("resources", job.spec.resources.summary)
        details.append("max runtime", Quantity.formatSeconds(job.spec.maxRuntimeSeconds))
        details.append("retries", String(job.spec.retries))
        if !job.spec.inputs.isEmpty { details.append("inputs", job.spec.inputs.joined(separator: ", ")) }
        if !job.spec.outputs.isEmpty { details.append("outputs", job.spec.outputs.joined(separator: ", ")) }
        details.print()
        if let usage = job.usage {
            Terminal.out("")
            for line in usage.lines(attempt: job.attempt) { Terminal.out(line) }
        }

        let recent = try await events.suffix(Self.recentEvents)
        guard !recent.isEmpty else { return }
        Terminal.out("")
        Terminal.out("Events:")
        var table = Table("TIME", "KIND", "ATTEMPT", "MESSAGE")
        for event in recent {
            table.append(
                TimeText.local(event.at),
                event.kind,
                event.attempt.map(String.init) ?? "-",
                event.message.oneLine
            )
        }
        for line in table.render() { Terminal.out("  " + line) }
    }
}
