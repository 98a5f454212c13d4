import ArgumentParser
import ComityClient
import Foundation

/// The `comity` command: the CLI of the Comity compute commons.
package struct Comity: AsyncParsableCommand {
    package static let configuration = CommandConfiguration(
        commandName: "comity",
        abstract: "Submit and follow jobs on the Comity compute commons, and manage the pool.",
        discussion: """
            Every command takes --server (env COMITY_SERVER, default \(GlobalOptions.defaultServer)), \
            --token (env COMITY_TOKEN) or --token-file (env COMITY_TOKEN_FILE), and --output table|json.

            Errors print one line "error: <message>" on standard error. Exit statuses: 0 success; \
            1 error; 2 bad command line or unreadable job file; 3 the job did not succeed (submit --wait); \
            4 not found.
            """,
        subcommands: [
            SubmitCommand.self, JobsCommand.self, JobCommand.self, LogsCommand.self, CancelCommand.self,
            HostsCommand.self, JurisdictionsCommand.self, RegionsCommand.self, PartnersCommand.self,
            ProjectsCommand.self, TokensCommand.self, WhoAmICommand.self, WhyCommand.self, ExplainCommand.self,
            PolicyCommand.self, DatasetsCommand.self, AuditCommand.self, SharesCommand.self, UsageCommand.self,
            QuotasCommand.self, GrantsCommand.self, ServicesCommand.self, EndpointsCommand.self,
        ]
    )

    package init() {}

    /// Parses the command line, runs the command and exits with the status documented in the help.
    package static func main() async {
        // Writes to a closed pipe return EPIPE (handled in Terminal) instead of killing the process.
        signal(SIGPIPE, SIG_IGN)
        let status: Int32
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
            status = ExitStatus.success
        } catch {
            status = report(error)
        }
        Foundation.exit(status)
    }

    /// Prints `error` (one `error:` line first) and returns the exit status for it.
    static func report(_ error: any Error) -> Int32 {
        switch error {
        case let exitCode as ExitCode:
            return exitCode.rawValue
        case let failure as CommandFailure:
            printError(failure.message, details: failure.details)
            return failure.exitCode
        case let failure as ClientError:
            var details = failure.fields.count > 1 ? failure.fields.map { "  \($0)" } : []
            if failure.status == 401 {
                details.append("  (pass --token or --token-file, or set COMITY_TOKEN)")
            }
            printError(failure.summary, details: details)
            return failure.status == 404 ? ExitStatus.notFound : ExitStatus.failure
        default:
            let code = exitCode(for: error)
            if code == .success {
                // --help, --version: ArgumentParser prints them to standard output.
                exit(withError: error)
            }
            var lines = fullMessage(for: error).split(separator: "\n", omittingEmptySubsequences: false).map(
                String.init
            )
            while lines.last?.isEmpty == true { lines.removeLast() }
            var first = lines.first.map { $0.hasPrefix("Error: ") ? String($0.dropFirst(7)) : $0 } ?? "\(error)"
            lines = Array(lines.dropFirst())
            // "...is invalid for '--state <state>'. Please provide one of the following:" and a bulleted list
            // become one line, so that the first line says everything.
            let choices = lines.prefix { $0.hasPrefix("  - ") }.map { $0.dropFirst(4) }
            if !choices.isEmpty {
                let lead = "Please provide one of the following:"
                if first.hasSuffix(lead) {
                    first = String(first.dropLast(lead.count)).trimmingCharacters(in: .whitespaces)
                }
                first += " Expected one of: " + choices.joined(separator: ", ") + "."
                lines = Array(lines.dropFirst(choices.count))
            }
            printError(first, details: lines)
            return code == .validationFailure ? ExitStatus.usage : code.rawValue
        }
    }

    private static func printError(_ message: String, details: [String]) {
        Terminal.err("error: " + message.oneLine)
        for line in details { Terminal.err(line) }
    }
}
