import ArgumentParser
import ComityAPI
import ComityClient
import ComityCore
import Foundation

/// `comity jobs [--state S] [--project P] [--limit N]`.
struct JobsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "jobs", abstract: "List jobs visible to this token.")

    @Option(help: "Only jobs in this state.")
    var state: JobState?

    @Option(help: ArgumentHelp("Only jobs of this project.", valueName: "name"))
    var project: String?

    @Option(help: ArgumentHelp("At most this many jobs.", valueName: "n"))
    var limit: Int?

    @OptionGroup(title: "Global Options")
    var global: GlobalOptions

    func validate() throws {
        if let limit, limit <= 0 { throw ValidationError("--limit: expected a positive number, got \(limit)") }
    }

    func run() async throws {
        let jobs = try await global.client().jobs(state: state, project: project, limit: limit)
        if global.isJSON { return try Terminal.json(jobs) }
        let now = Date()
        var table = Table("ID", "NAME", "PROJECT", "STATE", "HOST", "REGION", "ATTEMPTS", "EXIT", "AGE")
        for job in jobs {
            table.append(
                String(job.id),
                job.name,
                job.project,
                job.stateText,
                job.host ?? "-",
                job.region ?? "-",
                String(job.attempts),
                job.exitCode.map(String.init) ?? "-",
                TimeText.age(since: job.submittedAt, now: now)
            )
        }
        table.print(empty: "no jobs")
    }
}

extension JobView {
    /// The state as people read it: a failure whose reason starts with a code (`OOM_KILLED: …`) shows the code,
    /// `failed (OOM_KILLED)`.
    var stateText: String {
        guard state == .failed, let reason, let colon = reason.firstIndex(of: ":") else { return state.rawValue }
        let code = reason[..<colon]
        guard !code.isEmpty, code.allSatisfy({ $0.isUppercase || $0 == "_" }) else { return state.rawValue }
        return "failed (\(code))"
    }
}
