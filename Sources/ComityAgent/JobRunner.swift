import ComityAPI
import ComityCore
import Foundation
import Logging
import Subprocess
import Synchronization

#if canImport(System)
import System
#else
import SystemPackage
#endif

/// Runs one job as a plain child process in its own process group and work folder, and streams its output.
///
/// The runner knows nothing of the server: output goes to a sink closure, stop requests come through a
/// ``JobControl``, and the result is an ``Outcome``. When the job's first process exits, whatever it left behind in
/// its group is terminated too, so a finished job never leaves processes running. With a cgroup hierarchy
/// (``Configuration/cgroups``) each attempt runs in its own cgroup with the limits it asked for, which also catches
/// processes that left the group (see `JobRunner+Limits.swift`).
package struct JobRunner: JobExecutor {
    package struct Configuration: Sendable {
        /// Time between `SIGTERM` and `SIGKILL` when a job is stopped.
        package var killGrace: Duration = .seconds(10)
        /// How output is cut into chunks.
        package var logs = LogBatcher.Configuration()
        /// Where jobs get their limits: each attempt runs in its own cgroup with the memory, CPU and pids limits of
        /// its request; `nil` runs jobs without limits.
        package var cgroups: CGroupHierarchy?
        /// The most processes (threads included) a job may have when it runs in a cgroup.
        package var pidsLimit = 4096

        package init(killGrace: Duration = .seconds(10), cgroups: CGroupHierarchy? = nil) {
            self.killGrace = killGrace
            self.cgroups = cgroups
        }
    }

    /// What to run.
    package struct Job: Sendable {
        /// The program and its arguments; a program name without `/` is looked up in the job's `PATH`, a relative
        /// path is taken relative to the work folder.
        package var command: [String]
        package var environment: [String: String]
        package var workDirectory: String
        /// Stop the job (``StopReason/maxRuntime(seconds:)``) when it runs longer.
        package var maxRuntimeSeconds: Int64?
        /// What the job asked for: the limits a runner enforces (cgroups, Slurm's `--cpus-per-task`, …).
        package var resources: ResourceRequest?
        /// The GPUs assigned to it (UUIDs, or indices as text when the host reported no UUIDs).
        package var gpuDevices: [String]
        /// The attempt it runs as (`0` outside an agent): names cgroups, Slurm jobs and containers.
        package var attempt: Int64
        /// The job's name, for runners that show one (Slurm's `--job-name`).
        package var name: String
        /// Whether the job may use the network (the sandbox runner cuts it off otherwise).
        package var network: Bool
        /// A container image (the container runner), when the job names one.
        package var image: String?

        package init(
            command: [String],
            environment: [String: String],
            workDirectory: String,
            maxRuntimeSeconds: Int64?,
            resources: ResourceRequest? = nil,
            gpuDevices: [String] = [],
            attempt: Int64 = 0,
            name: String = "job",
            network: Bool = true,
            image: String? = nil
        ) {
            self.command = command
            self.environment = environment
            self.workDirectory = workDirectory
            self.maxRuntimeSeconds = maxRuntimeSeconds
            self.resources = resources
            self.gpuDevices = gpuDevices
            self.attempt = attempt
            self.name = name
            self.network = network
            self.image = image
        }
    }

    /// How a job ended.
    package enum Outcome: Sendable, Hashable {
        /// The job's first process exited by itself: its exit code, or 128 + the signal that killed it.
        case exited(Int32)
        /// The runner ended the job for this reason.
        case stopped(StopReason)
        /// The job could not be started (or its process could not be followed): why.
        case failed(String)
        /// The kernel's OOM killer ended the job because it exceeded its memory limit: the message names the limit.
        case oomKilled(String)

        /// The report to the server for this outcome.
        package var finishRequest: FinishRequest {
            switch self {
            case .exited(let code): FinishRequest(outcome: .exited, exitCode: code)
            case .stopped(.server): FinishRequest(outcome: .stopped)
            case .stopped(let reason): FinishRequest(outcome: .error, message: reason.description)
            case .failed(let message): FinishRequest(outcome: .error, message: message)
            case .oomKilled(let message): FinishRequest(outcome: .oomKilled, message: message)
            }
        }
    }

    package var configuration: Configuration
    package var logger: Logger

    package init(configuration: Configuration = Configuration(), logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    /// Runs `job` to its end and returns how it ended; its process group (and cgroup) is gone when this returns (or a
    /// warning was logged saying which survived `SIGKILL`).
    ///
    /// - Parameters:
    ///   - job: what to run.
    ///   - control: stop requests; one made before the start means the job is not started.
    ///   - onStart: called with the process group id once the process runs (e.g. to persist it).
    ///   - sink: receives numbered output chunks, one at a time; all are delivered before this returns.
    package func run(
        _ job: Job,
        control: JobControl,
        onStart: @escaping @Sendable (Int32) async -> Void = { _ in },
        sink: @escaping @Sendable (LogAppend) async -> Void
    ) async -> Outcome {
        let program: String
        switch Self.program(of: job, control: control) {
        case .success(let found): program = found
        case .failure(let refusal): return refusal.outcome
        }
        var limited = job
        var cgroup: CGroup?
        if let hierarchy = configuration.cgroups {
            switch limit(&limited, program: program, in: hierarchy) {
            case .success(let created): cgroup = created
            case .failure(let failure): return .failed(failure.message)
            }
        }
        let batcher = LogBatcher(configuration: configuration.logs)
        let outcome = await withTaskGroup(of: Void.self) { [limited] group in
            group.addTask { await batcher.run(sink: sink) }
            let outcome = await spawn(limited, program: program, control: control, batcher: batcher, onStart: onStart)
            batcher.finish()
            await group.waitForAll()
            return outcome
        }
        guard let cgroup else { return outcome }
        return await finish(cgroup, outcome: outcome)
    }

    private func spawn(
        _ job: Job,
        program: String,
        control: JobControl,
        batcher: LogBatcher,
        onStart: @escaping @Sendable (Int32) async -> Void
    ) async -> Outcome {
        let first = job.command[0]
        let executable: Executable =
            if first.hasPrefix("/") {
                .path(FilePath(first))
            } else if first.contains("/") {
                .path(FilePath(job.workDirectory + "/" + first))
            } else {
                .name(first)
            }
        var environment: [Environment.Key: String] = [:]
        for (name, value) in job.environment { environment[Environment.Key(stringLiteral: name)] = value }
        var options = PlatformOptions()
        options.processGroupID = 0
        let grace = configuration.killGrace
        let logger = logger
        let startedGroup = StartedGroup()
        do {
            let result = try await Subprocess.run(
                executable,
                arguments: Arguments(Array(job.command.dropFirst())),
                environment: .custom(environment),
                workingDirectory: FilePath(job.workDirectory),
                platformOptions: options,
                input: .none,
                output: .sequence,
                error: .sequence
            ) { execution -> StopReason? in
                let pgid = execution.processIdentifier.value
                startedGroup.set(pgid)
                logger.debug("job process started", metadata: ["process.pgid": "\(pgid)"])
                await onStart(pgid)
                // Stops the group when asked; ends when the leader has exited.
                async let acted = Self.watch(pgid, control: control, grace: grace)
                await withTaskGroup(of: Bool.self) { streams in
                    streams.addTask {
                        await Self.drain(execution.standardOutput, into: batcher, as: .stdout, logger: logger)
                    }
                    streams.addTask {
                        await Self.drain(execution.standardError, into: batcher, as: .stderr, logger: logger)
                    }
                    if let seconds = job.maxRuntimeSeconds {
                        streams.addTask {
                            do { try await Task.sleep(for: .seconds(seconds)) } catch { return false }
                            control.stop(.maxRuntime(seconds: seconds))
                            return false
                        }
                    }
                    // Both streams end when the leader exits (Subprocess then stops waiting for descendants that
                    // still hold the pipes), or earlier when the job closed them; the runtime timer keeps running
                    // until the leader has really exited.
                    var drained = 0
                    for await isStream in streams where isStream {
                        drained += 1
                        if drained == 2 { break }
                    }
                    await ProcessGroup.waitForExit(of: pgid)
                    streams.cancelAll()
                }
                control.leaderExited()
                return await acted
            }
            let pgid = startedGroup.value ?? 0
            await ensureGone(pgid, control: control)
            if let reason = result.closureResult { return .stopped(reason) }
            switch result.terminationStatus {
            case .exited(let code): return .exited(code)
            case .signaled(let signal): return .exited(128 + signal)
            }
        } catch {
            guard let pgid = startedGroup.value else {
                logger.warning("job failed to start", metadata: ["error": "\(error)"])
                return .failed("cannot start \(program): \(Self.describe(error))")
            }
            logger.error("lost track of job process", metadata: ["process.pgid": "\(pgid)", "error": "\(error)"])
            await ensureGone(pgid, control: control)
            if let reason = control.stopReason { return .stopped(reason) }
            return .failed("lost track of the job's process: \(Self.describe(error))")
        }
    }

    /// Why a job is not started: a stop requested before the start, or nothing to run.
    package struct Refusal: Error {
        package var outcome: Outcome
    }

    /// The program a runner starts for `job`, or the outcome to report instead (shared by every runner).
    package static func program(of job: Job, control: JobControl) -> Result<String, Refusal> {
        if let reason = control.stopReason { return .failure(Refusal(outcome: .stopped(reason))) }
        guard let program = job.command.first, !program.isEmpty else {
            return .failure(Refusal(outcome: .failed("cannot start the job: empty command")))
        }
        return .success(program)
    }

    /// Terminates what the job's leader left behind in its group.
    private func ensureGone(_ pgid: Int32, control: JobControl) async {
        guard pgid > 1 else { return }
        let isGone = await ProcessGroup.terminate(
            pgid,
            grace: configuration.killGrace,
            terminatedAt: control.terminatedAt
        )
        if !isGone {
            logger.warning("job process group survived SIGKILL", metadata: ["process.pgid": "\(pgid)"])
        }
    }

    /// Waits for a stop request and carries it out; returns the reason it acted on, or `nil` when the leader exited
    /// first.
    ///
    /// `SIGTERM` (with `SIGCONT`) goes to the whole group; when the leader has not exited after the grace, `SIGKILL`
    /// follows. Members the leader leaves behind are handled by ``ensureGone(_:control:)`` once the leader is reaped.
    private static func watch(_ pgid: Int32, control: JobControl, grace: Duration) async -> StopReason? {
        await withTaskGroup(of: Void.self) { timers in
            var acted: StopReason?
            for await event in control.events {
                switch event {
                case .leaderExited:
                    timers.cancelAll()
                    return acted
                case .stop:
                    guard acted == nil, let reason = control.stopReason else { continue }
                    acted = reason
                    control.terminatedAt = .now
                    ProcessGroup.signal(pgid, SIGTERM)
                    ProcessGroup.signal(pgid, SIGCONT)
                    timers.addTask {
                        try? await Task.sleep(for: grace)
                        control.graceExpired()
                    }
                case .graceExpired:
                    ProcessGroup.signal(pgid, SIGKILL)
                }
            }
            // Only when the task was cancelled: Subprocess's teardown and `ensureGone` finish the job off.
            timers.cancelAll()
            return acted
        }
    }

    /// Copies one output stream into the batcher until it ends; returns `true`.
    private static func drain(
        _ sequence: SubprocessOutputSequence,
        into batcher: LogBatcher,
        as stream: LogStream,
        logger: Logger
    ) async -> Bool {
        do {
            for try await buffer in sequence {
                batcher.append(stream, buffer.withUnsafeBytes { Array($0) })
            }
        } catch {
            logger.warning(
                "job output stream failed",
                metadata: ["log.stream": "\(stream.rawValue)", "error": "\(error)"]
            )
        }
        return true
    }

    private static func describe(_ error: any Error) -> String {
        if let error = error as? SubprocessError {
            if error.code == .executableNotFound { return "command not found" }
            if error.code == .failedToChangeWorkingDirectory { return "cannot enter the work folder" }
            return error.description
        }
        return "\(error)"
    }
}

/// The job's process group id, set once from inside the Subprocess body and read after it.
private final class StartedGroup: Sendable {
    private let storage = Mutex<Int32?>(nil)

    func set(_ pgid: Int32) { storage.withLock { $0 = pgid } }
    var value: Int32? { storage.withLock { $0 } }
}
