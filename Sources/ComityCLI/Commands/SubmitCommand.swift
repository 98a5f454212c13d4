import ArgumentParser
import ComityAPI
import ComityClient
import ComityCore
import Foundation

/// `comity submit FILE [--wait]`.
struct SubmitCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "submit",
        abstract: "Submit a job file (YAML or JSON).",
        discussion: """
            Prints a short summary, then the job id alone on the last line of standard output.

            With --wait, prints the job id on the first line, then one line per state change \
            ("12:00:01 assigned to de-gpu (eu-de-1)", "12:00:02 running on de-gpu", ...), and the final \
            state last ("12:00:09 succeeded exit 0"). The exit status is 0 only if the job succeeded, \
            3 if it failed or was cancelled.

            With --output json, prints the job as JSON (after --wait, its final state; progress lines then \
            go to standard error).

            With --dry-run, reads and validates the file locally and prints the job spec, submitting nothing.
            """
    )

    @Argument(help: ArgumentHelp("The job file, or - for standard input.", valueName: "file"))
    var file: String

    @Flag(help: "Wait for the job to finish, showing its state changes; exit 0 only if it succeeded.")
    var wait = false

    @Flag(help: "Validate the file locally and print the job spec; submit nothing.")
    var dryRun = false

    @Option(
        help: ArgumentHelp(
            "Submit a job array in one request and one transaction: one job per index of RANGE (1-10000, or 0-99:2), each with COMITY_ARRAY_INDEX in its environment. Prints the ids, the last alone on the last line.",
            valueName: "range"))
    var array: String?

    @OptionGroup(title: "Global Options")
    var global: GlobalOptions

    func validate() throws {
        if wait && dryRun { throw ValidationError("--wait and --dry-run cannot be combined") }
        if array != nil && wait { throw ValidationError("--array and --wait cannot be combined (follow the jobs with comity jobs)") }
    }

    func run() async throws {
        let document = try JobFile.load(file)
        if dryRun { return try checkLocally(document) }
        let client = try global.client()
        if let array {
            let ids = try await client.submitArray(document, array: array)
            if global.isJSON { return try Terminal.json(ids) }
            Terminal.out("submitted \(ids.count) jobs: \(ids.first.map(String.init) ?? "")…\(ids.last.map(String.init) ?? "")")
            if let last = ids.last { Terminal.out(String(last)) }
            return
        }
        let job = try await client.submit(document)
        guard wait else {
            if global.isJSON { return try Terminal.json(job) }
            Terminal.out("submitted job \(job.id) \(job.name) to project \(job.project): \(job.state.rawValue)")
            Terminal.out(String(job.id))
            return
        }
        let final = try await follow(job, client: client)
        if global.isJSON { try Terminal.json(final) }
        if final.state != .succeeded { throw ExitCode(ExitStatus.jobUnsuccessful) }
    }

    /// Long-polls the job until it is terminal, printing one line per change.
    private func follow(_ submitted: JobView, client: ComityClient) async throws -> JobView {
        // With --output json, standard output carries only the final job; progress goes to standard error.
        let isJSON = global.isJSON
        func progress(_ line: String) { isJSON ? Terminal.err(line) : Terminal.out(line) }
        progress(String(submitted.id))
        var job = submitted
        var shown = job.progressKey
        progress("\(TimeText.clock(job.stateSince ?? Date())) \(job.progressText)")
        while !job.state.isTerminal {
            let current = job
            job = try await Reconnect.retrying { try await client.job(current.id, waitWhile: current.state) }
            guard job.progressKey != shown else { continue }
            shown = job.progressKey
            progress("\(TimeText.clock(job.stateSince ?? Date())) \(job.progressText)")
        }
        return job
    }

    private var displayName: String { file == "-" ? "<stdin>" : file }

    private func checkLocally(_ document: JSONValue) throws {
        switch JobSpec.validate(document) {
        case .success(let spec):
            if global.isJSON { return try Terminal.json(spec) }
            Terminal.out("\(displayName): valid job \(spec.name) for project \(spec.project)")
            var details = Details()
            details.append("kind", spec.kind.rawValue)
            details.append("command", spec.command.shellQuoted)
            details.append("resources", spec.resources.summary)
            details.append("max runtime", Quantity.formatSeconds(spec.maxRuntimeSeconds))
            details.append("retries", String(spec.retries))
            details.append("priority", String(spec.priority))
            details.print()
        case .failure(let failure):
            let details = failure.errors.count > 1 ? failure.errors.map { "  \($0)" } : []
            throw CommandFailure(message: "\(displayName): \(failure)", details: details, exitCode: ExitStatus.usage)
        }
    }
}
