import Foundation
import Subprocess

#if canImport(System)
import System
#else
import SystemPackage
#endif

/// Runs Slurm's client commands (`sbatch`, `squeue`, `scontrol`, `scancel`, `sinfo`) against one cluster.
///
/// Commands inherit the agent's environment; `SLURM_CONF` is set to ``configurationFile`` when there is one (the
/// agent's `--slurm-conf`), so a gateway can reach a cluster other than the one `/etc/slurm/slurm.conf` names.
package struct SlurmCommands: Sendable {
    /// What a command printed and how it ended.
    package struct Result: Sendable {
        /// The exit code; `nil` when it was killed by a signal, could not start, or ran past the timeout.
        package var status: Int32?
        package var output: String
        package var error: String

        package var isSuccess: Bool { status == 0 }

        /// The command's stderr, else its stdout, on one line: what to put in a message.
        package var complaint: String {
            let text = error.trimmingCharacters(in: .whitespacesAndNewlines)
            let chosen = text.isEmpty ? output.trimmingCharacters(in: .whitespacesAndNewlines) : text
            return chosen.split(whereSeparator: \.isNewline).joined(separator: "; ")
        }
    }

    /// `SLURM_CONF` for every command; `nil` leaves the agent's own environment (and Slurm's default) alone.
    package var configurationFile: String?
    /// How long one command may take before it is killed (a controller that does not answer makes the client
    /// commands retry for their `MessageTimeout`).
    package var timeout: Duration

    package init(configurationFile: String? = nil, timeout: Duration = .seconds(60)) {
        self.configurationFile = configurationFile
        self.timeout = timeout
    }

    /// Runs `program` (looked up in the agent's `PATH`) with `arguments`; never throws: a command that cannot start
    /// or times out is a ``Result`` with no status and the reason in `error`.
    package func run(_ program: String, _ arguments: [String]) async -> Result {
        let environment =
            configurationFile.map { Environment.inherit.updating(["SLURM_CONF": $0]) } ?? Environment.inherit
        let timeout = self.timeout
        do {
            return try await withThrowingTaskGroup(of: Result?.self) { group in
                group.addTask {
                    let result = try await Subprocess.run(
                        .name(program),
                        arguments: Arguments(arguments),
                        environment: environment,
                        input: .none,
                        output: .string(limit: 4 << 20),
                        error: .string(limit: 1 << 20)
                    )
                    let status: Int32? =
                        switch result.terminationStatus {
                        case .exited(let code): code
                        case .signaled: nil
                        }
                    return Result(
                        status: status,
                        output: result.standardOutput,
                        error: result.standardError
                    )
                }
                group.addTask {
                    try await Task.sleep(for: timeout)
                    return nil
                }
                let first = try await group.next() ?? nil
                group.cancelAll()
                return first ?? Result(status: nil, output: "", error: "\(program) did not answer within \(timeout)")
            }
        } catch let error as SubprocessError where error.code == .executableNotFound {
            return Result(status: nil, output: "", error: "\(program): command not found")
        } catch {
            return Result(status: nil, output: "", error: "\(program): \(error)")
        }
    }
}

// MARK: - What Slurm prints

extension SlurmCommands {
    /// The job id in `sbatch --parsable`'s answer (`1234` or `1234;cluster`), or `nil` when there is none.
    package static func parseJobID(_ parsable: String) -> String? {
        let line = parsable.split(whereSeparator: \.isNewline).last.map(String.init) ?? ""
        let id = line.split(separator: ";", maxSplits: 1).first.map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
        guard !id.isEmpty, id.allSatisfy(\.isNumber) else { return nil }
        return id
    }

    /// The `Key=Value` fields of one `scontrol -o show job` line.
    ///
    /// Values may contain spaces (`Command=/a b`): a word without `=` continues the previous value.
    package static func fields(ofScontrolLine line: String) -> [String: String] {
        var fields: [String: String] = [:]
        var lastKey: String?
        for word in line.split(separator: " ", omittingEmptySubsequences: true) {
            if let equals = word.firstIndex(of: "="), equals != word.startIndex {
                let key = String(word[..<equals])
                fields[key] = String(word[word.index(after: equals)...])
                lastKey = key
            } else if let key = lastKey {
                fields[key, default: ""] += " " + word
            }
        }
        return fields
    }

    /// Splits `ExitCode=2:0` into the exit code and the signal.
    package static func parseExitCode(_ text: String) -> (code: Int32, signal: Int32)? {
        let parts = text.split(separator: ":")
        guard parts.count == 2, let code = Int32(parts[0]), let signal = Int32(parts[1]) else { return nil }
        return (code, signal)
    }

    /// Job states after which Slurm runs nothing more of the job (`COMPLETING` is not one: processes may remain).
    package static let terminalStates: Set<String> = [
        "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL",
        "DEADLINE", "REVOKED", "SPECIAL_EXIT",
    ]

    /// How a job ended, from the final `scontrol -o show job` fields, when the agent did not stop it itself.
    ///
    /// `COMPLETED`/`FAILED` give the exit code (`ExitCode=2:0` is `exited(2)`, `0:9` is `exited(137)`); Slurm's own
    /// ends (`TIMEOUT`, `OUT_OF_MEMORY`, `CANCELLED` by someone else, `NODE_FAIL`, …) are reported with a message
    /// naming the Slurm job and its state. A `TIMEOUT` of a job with a runtime limit is
    /// ``StopReason/maxRuntime(seconds:)``, as if the agent had stopped it.
    package static func outcome(
        jobID: String,
        fields: [String: String],
        maxRuntimeSeconds: Int64?
    ) -> JobRunner.Outcome {
        let state = (fields["JobState"] ?? "UNKNOWN").split(separator: "+").first.map(String.init) ?? "UNKNOWN"
        let exit = fields["ExitCode"].flatMap(parseExitCode)
        let reason = fields["Reason"].flatMap { $0 == "None" || $0.isEmpty ? nil : $0 }
        let said = "Slurm job \(jobID) ended \(state)" + (reason.map { " (\($0))" } ?? "")
        switch state {
        case "COMPLETED", "FAILED":
            guard let exit else { return .failed(said + " without an exit code") }
            if exit.signal != 0 { return .exited(128 + exit.signal) }
            if state == "FAILED", exit.code == 0 { return .failed(said) }
            return .exited(exit.code)
        case "TIMEOUT":
            if let maxRuntimeSeconds { return .stopped(.maxRuntime(seconds: maxRuntimeSeconds)) }
            return .failed(said + ": the partition's time limit")
        case "OUT_OF_MEMORY":
            return .oomKilled(said + ": memory limit \(fields["MinMemoryNode"] ?? "unknown") exceeded")
        case "CANCELLED":
            return .failed(said + ": cancelled outside Comity")
        case "NODE_FAIL", "BOOT_FAIL":
            return .failed(said + ": its node failed")
        case "PREEMPTED":
            return .failed(said + ": preempted by Slurm")
        default:
            return .failed(said)
        }
    }
}
