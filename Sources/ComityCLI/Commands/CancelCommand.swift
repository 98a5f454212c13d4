import ArgumentParser
import ComityAPI
import ComityClient
import ComityCore

/// `comity cancel ID`.
struct CancelCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cancel",
        abstract: "Cancel a job; a running job's process group is stopped on the agent.",
        discussion: "Prints the job's resulting state (with --output json, the job)."
    )

    @Argument(help: ArgumentHelp("The job id.", valueName: "id"))
    var id: Int64

    @OptionGroup(title: "Global Options")
    var global: GlobalOptions

    func run() async throws {
        let job = try await global.client().cancel(id)
        if global.isJSON { return try Terminal.json(job) }
        if job.state.isTerminal {
            Terminal.out("job \(job.id): \(job.state.rawValue)")
        } else {
            Terminal.out("job \(job.id): \(job.state.rawValue), cancel requested; its agent stops it shortly")
        }
    }
}
