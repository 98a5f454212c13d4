import ComityAPI
import ComityCore
import Foundation
import Logging

/// Runs a job as a Slurm batch job in a partner's partition: the agent is a gateway, and Slurm runs the job on one
/// of the partition's nodes.
///
/// The job's command goes into a batch script in its work folder (which the partition's nodes must see at the same
/// path: put the agent's `--state-dir` on a shared filesystem), submitted with `sbatch` and the job's resources
/// (`--cpus-per-task`, `--mem`, `--gres=gpu:N`, `--time`). The runner follows it with `squeue` (polling with backoff,
/// 250 ms to 2 s) and reads its final state and exit code from `scontrol show job`; the job's output files
/// (`slurm-ID.out`, `slurm-ID.err`) are tailed into the same ``LogBatcher`` the process runner uses. A stop request
/// sends `SIGTERM` to the job (`scancel --full --signal=TERM`) and cancels it (`scancel`) after the grace.
///
/// `onStart` gets `0`: nothing runs on the agent's host. The Slurm job id is kept in the work folder
/// (``jobIDFileName``) so that an agent started after a crash can cancel what its predecessor submitted
/// (``cancelLeftovers(in:commands:logger:)``).
package struct SlurmRunner: JobExecutor {
    package struct Configuration: Sendable {
        /// The partition every job is submitted to (`--slurm-partition`).
        package var partition: String
        /// How Slurm's commands are run (`--slurm-conf`).
        package var commands: SlurmCommands
        /// Time between `scancel --signal=TERM` and `scancel` when a job is stopped.
        package var killGrace: Duration
        /// How output is cut into chunks.
        package var logs = LogBatcher.Configuration()
        /// The first and the longest pause between two looks at the job; new output or a new state resets it.
        package var pollInterval: Duration = .milliseconds(250)
        package var maxPollInterval: Duration = .seconds(2)
        /// How long Slurm may fail to answer about a job before the runner gives it up as lost.
        package var lostAfter: Duration = .seconds(600)

        package init(partition: String, commands: SlurmCommands = SlurmCommands(), killGrace: Duration = .seconds(10)) {
            self.partition = partition
            self.commands = commands
            self.killGrace = killGrace
        }
    }

    /// The batch script written into the work folder.
    package static let scriptName = "comity-job.sh"
    /// The file in the work folder that holds the Slurm job id once `sbatch` accepted the job.
    package static let jobIDFileName = "slurm-job-id"

    package var configuration: Configuration
    package var logger: Logger

    package init(configuration: Configuration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    /// Submits `job`, follows it to its end and returns how it ended (see ``JobExecutor``).
    package func run(
        _ job: JobRunner.Job,
        control: JobControl,
        onStart: @escaping @Sendable (Int32) async -> Void,
        sink: @escaping @Sendable (LogAppend) async -> Void
    ) async -> JobRunner.Outcome {
        let program: String
        switch JobRunner.program(of: job, control: control) {
        case .success(let found): program = found
        case .failure(let refusal): return refusal.outcome
        }
        let script = job.workDirectory + "/" + Self.scriptName
        do {
            try StateDirectory.writePrivately(Data(Self.batchScript(for: job).utf8), to: script)
            guard chmod(script, 0o700) == 0 else { throw POSIXFailure(operation: "chmod \(script)", code: errno) }
        } catch {
            return .failed("cannot write the batch script: \(error)")
        }
        let arguments = Self.submitArguments(for: job, partition: configuration.partition, script: script)
        let submitted = await configuration.commands.run("sbatch", arguments)
        guard submitted.isSuccess, let jobID = SlurmCommands.parseJobID(submitted.output) else {
            logger.warning("sbatch refused the job", metadata: ["error": "\(submitted.complaint)"])
            return .failed("sbatch refused the job: \(submitted.complaint)")
        }
        try? Data((jobID + "\n").utf8).write(to: URL(fileURLWithPath: job.workDirectory + "/" + Self.jobIDFileName))
        var logger = self.logger
        logger[metadataKey: "slurm.job_id"] = "\(jobID)"
        logger.info("slurm job submitted", metadata: ["slurm.partition": "\(configuration.partition)"])
        await onStart(0)
        let batcher = LogBatcher(configuration: configuration.logs)
        return await withTaskGroup(of: Void.self) { group in
            group.addTask { await batcher.run(sink: sink) }
            let outcome = await follow(jobID, job: job, control: control, batcher: batcher, logger: logger)
            batcher.finish()
            await group.waitForAll()
            return outcome
        }
    }

    /// Polls the job until it has left the queue, tailing its output; carries out stop requests meanwhile.
    private func follow(
        _ jobID: String,
        job: JobRunner.Job,
        control: JobControl,
        batcher: LogBatcher,
        logger: Logger
    ) async -> JobRunner.Outcome {
        let commands = configuration.commands
        let grace = configuration.killGrace
        var tail = OutputTail(
            stdout: "\(job.workDirectory)/slurm-\(jobID).out",
            stderr: "\(job.workDirectory)/slurm-\(jobID).err"
        )
        async let acted = Self.watch(jobID, control: control, grace: grace, commands: commands, logger: logger)
        let ended: JobRunner.Outcome = await withTaskGroup(of: Void.self) { timers in
            var interval = configuration.pollInterval
            var lastState = ""
            var lastAnswer = ContinuousClock.now
            var isTimed = false
            defer { timers.cancelAll() }
            while true {
                let hasOutput = tail.read(into: batcher)
                let queue = await commands.run("squeue", ["-h", "-j", jobID, "-o", "%T"])
                let state = queue.output.trimmingCharacters(in: .whitespacesAndNewlines)
                if queue.isSuccess, state.isEmpty || SlurmCommands.terminalStates.contains(state) {
                    return await finalOutcome(jobID, job: job)
                } else if queue.isSuccess {
                    lastAnswer = .now
                    if state != lastState {
                        logger.debug("slurm job state", metadata: ["slurm.state": "\(state)"])
                        lastState = state
                        interval = configuration.pollInterval
                    }
                    if state == "RUNNING", !isTimed, let seconds = job.maxRuntimeSeconds {
                        // The runtime counts from the start on a node, not from the submission.
                        isTimed = true
                        timers.addTask {
                            do { try await Task.sleep(for: .seconds(seconds)) } catch { return }
                            control.stop(.maxRuntime(seconds: seconds))
                        }
                    }
                } else if queue.error.contains("Invalid job id") {
                    // Gone from the controller's memory already (MinJobAge passed): scontrol/sacct may still know.
                    return await finalOutcome(jobID, job: job)
                } else if ContinuousClock.now - lastAnswer > configuration.lostAfter {
                    logger.error("slurm does not answer about the job", metadata: ["error": "\(queue.complaint)"])
                    return .failed("lost track of Slurm job \(jobID): \(queue.complaint)")
                } else {
                    logger.warning("squeue failed; retrying", metadata: ["error": "\(queue.complaint)"])
                }
                if hasOutput || control.stopReason != nil { interval = configuration.pollInterval }
                do { try await Task.sleep(for: interval) } catch {
                    return .failed("stopped following Slurm job \(jobID): the agent's task was cancelled")
                }
                interval = min(interval * 2, configuration.maxPollInterval)
            }
        }
        tail.read(into: batcher)
        control.leaderExited()
        if let reason = await acted { return .stopped(reason) }
        return ended
    }

    /// How the job ended, from `scontrol show job` (or `sacct` where the controller has forgotten it).
    private func finalOutcome(_ jobID: String, job: JobRunner.Job) async -> JobRunner.Outcome {
        let commands = configuration.commands
        let shown = await commands.run("scontrol", ["-o", "show", "job", jobID])
        if shown.isSuccess {
            let fields = SlurmCommands.fields(ofScontrolLine: shown.output)
            if fields["JobState"] != nil {
                return SlurmCommands.outcome(jobID: jobID, fields: fields, maxRuntimeSeconds: job.maxRuntimeSeconds)
            }
        }
        let accounted = await commands.run("sacct", ["-n", "-X", "-P", "-j", jobID, "-o", "State,ExitCode"])
        if accounted.isSuccess, let line = accounted.output.split(whereSeparator: \.isNewline).first {
            let parts = line.split(separator: "|").map(String.init)
            if parts.count == 2 {
                let state = parts[0].split(separator: " ").first.map(String.init) ?? parts[0]
                return SlurmCommands.outcome(
                    jobID: jobID,
                    fields: ["JobState": state, "ExitCode": parts[1]],
                    maxRuntimeSeconds: job.maxRuntimeSeconds
                )
            }
        }
        return .failed("Slurm job \(jobID) left the queue, but Slurm no longer says how it ended: \(shown.complaint)")
    }

    /// Waits for a stop request and carries it out; returns the reason it acted on, or `nil` when the job ended first.
    ///
    /// `scancel --full --signal=TERM` reaches the batch script (the job's command) and what it started; a job still
    /// pending is cancelled outright. After the grace, `scancel` cancels the job (Slurm then sends `SIGKILL` after
    /// its `KillWait`).
    private static func watch(
        _ jobID: String,
        control: JobControl,
        grace: Duration,
        commands: SlurmCommands,
        logger: Logger
    ) async -> StopReason? {
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
                    logger.info("cancelling slurm job", metadata: ["reason": "\(reason)"])
                    let signalled = await commands.run("scancel", ["--full", "--signal=TERM", jobID])
                    if signalled.isSuccess, grace > .zero {
                        timers.addTask {
                            try? await Task.sleep(for: grace)
                            control.graceExpired()
                        }
                    } else {
                        await cancel(jobID, commands: commands, logger: logger)
                    }
                case .graceExpired:
                    await cancel(jobID, commands: commands, logger: logger)
                }
            }
            timers.cancelAll()
            return acted
        }
    }

    private static func cancel(_ jobID: String, commands: SlurmCommands, logger: Logger) async {
        let cancelled = await commands.run("scancel", [jobID])
        if !cancelled.isSuccess {
            logger.warning("scancel failed", metadata: ["error": "\(cancelled.complaint)"])
        }
    }
}

/// New bytes of a Slurm job's two output files since the last look.
private struct OutputTail {
    var stdout: String
    var stderr: String
    var offsets: [LogStream: UInt64] = [:]

    /// Appends what the files gained to `batcher`; returns whether there was anything.
    @discardableResult
    mutating func read(into batcher: LogBatcher) -> Bool {
        var hasOutput = false
        for (stream, path) in [(LogStream.stdout, stdout), (.stderr, stderr)] {
            guard let handle = FileHandle(forReadingAtPath: path) else { continue }
            defer { try? handle.close() }
            var offset = offsets[stream] ?? 0
            defer { offsets[stream] = offset }
            do {
                try handle.seek(toOffset: offset)
                while let data = try handle.read(upToCount: 1 << 20), !data.isEmpty {
                    batcher.append(stream, Array(data))
                    offset += UInt64(data.count)
                    hasOutput = true
                }
            } catch {
                // Read again at the next look.
            }
        }
        return hasOutput
    }
}
