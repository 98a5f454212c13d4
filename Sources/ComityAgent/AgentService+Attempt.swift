import ComityAPI
import ComityClient
import ComityCore
import Foundation
import Logging

extension AgentService {
    /// Runs one assignment: acknowledge the start, run the job, stream its output, report how it ended.
    ///
    /// Throws only ``AgentError/Code/unauthorized``; everything else ends in a finish report or, when the start was
    /// never acknowledged, in dropping the assignment (its lease then expires on the server).
    func runAttempt(
        _ assignment: Assignment,
        control: JobControl,
        session: Session,
        registry: AttemptRegistry
    ) async throws {
        defer { registry.remove(assignment.attempt) }
        var logger = self.logger
        logger[metadataKey: "job.id"] = "\(assignment.jobId)"
        logger[metadataKey: "attempt.id"] = "\(assignment.attempt)"
        let client = session.client
        let state = configuration.stateDirectory

        // 1. Acknowledge; only a current attempt runs.
        do {
            let leaseEnd = ContinuousClock.now.advanced(
                by: .seconds(max(1, assignment.leaseExpiresAt.timeIntervalSinceNow))
            )
            let ack = try await Self.retrying("start", logger: logger, deadline: leaseEnd) {
                try await session.reporter.start(attempt: assignment.attempt)
            }
            guard ack.current else {
                logger.info("assignment no longer current; dropped", metadata: ["attempt.state": "\(ack.state)"])
                return
            }
        } catch {
            try failIfUnauthorized(error, server: client.server)
            logger.warning("assignment dropped: start not acknowledged", metadata: ["error": "\(error)"])
            return
        }
        logger.info(
            "job starting",
            metadata: [
                "job.name": "\(assignment.spec.name)",
                "gpu.devices": "\(JobEnvironment.visibleDevices(for: assignment))",
            ]
        )

        // 2. Run it.
        let outcome: JobRunner.Outcome
        let sampler = gpuSampler(for: assignment, inventory: session.resources.gpus, logger: logger)
        do {
            let workDirectory = try state.makeWorkDirectory(attempt: assignment.attempt)
            let job = JobRunner.Job(
                command: assignment.spec.command,
                environment: JobEnvironment.build(
                    for: assignment,
                    workDirectory: workDirectory,
                    inherited: environment
                ),
                workDirectory: workDirectory,
                maxRuntimeSeconds: assignment.spec.maxRuntimeSeconds,
                resources: assignment.spec.resources,
                gpuDevices: JobEnvironment.visibleDevices(for: assignment).split(separator: ",").map(String.init),
                attempt: assignment.attempt,
                name: assignment.spec.name,
                network: assignment.spec.network ?? false,
                image: assignment.spec.image
            )
            let runner = executor(for: assignment, services: session.services, logger: logger)
            async let sampled: Void = sampler.run()
            outcome = await runner.run(
                job,
                control: control,
                onStart: { [logger] pgid in
                    sampler.jobStarted(processGroup: pgid)
                    let record = RunningRecord(
                        attempt: assignment.attempt,
                        jobId: assignment.jobId,
                        pgid: pgid,
                        bootId: ProcessTable.bootID(),
                        startedAt: Date()
                    )
                    do { try record.save(in: state) } catch {
                        logger.warning("cannot save running record", metadata: ["error": "\(error)"])
                    }
                    logger.info("job started", metadata: ["process.pgid": "\(pgid)"])
                },
                sink: { [logger] chunk in
                    await upload(chunk, attempt: assignment.attempt, client: client, control: control, logger: logger)
                }
            )
            sampler.stop()
            await sampled
        } catch {
            outcome = .failed("cannot create the work folder: \(error)")
        }
        RunningRecord.remove(attempt: assignment.attempt, in: state)

        // 3. Report.
        var request = outcome.finishRequest
        request.usage = sampler.usage
        logger.info(
            "job finished",
            metadata: [
                "attempt.outcome": "\(request.outcome.rawValue)",
                "exit.code": "\(request.exitCode.map(String.init) ?? "-")", "message": "\(request.message ?? "")",
            ]
        )
        do {
            let ack = try await Self.retrying("finish", logger: logger) {
                try await session.reporter.finish(attempt: assignment.attempt, request)
            }
            logger.debug("finish acknowledged", metadata: ["attempt.state": "\(ack.state)"])
        } catch {
            try failIfUnauthorized(error, server: client.server)
            logger.error(
                "finish report failed; the server will find the attempt by its lease",
                metadata: ["error": "\(error)"]
            )
        }
        state.pruneWorkDirectories(keeping: Set(registry.attempts))
    }

    /// Delivers one log chunk, retrying while the server is unreachable; stops the job when the attempt is fenced off.
    ///
    /// Gives up on the chunk for a 4xx (the attempt is gone, or the chunk was refused) or when cancelled.
    func upload(_ chunk: LogAppend, attempt: Int64, client: ComityClient, control: JobControl, logger: Logger) async {
        do {
            let ack = try await Self.retrying("append log", logger: logger) {
                try await client.appendLog(attempt: attempt, chunk)
            }
            if !ack.current, control.stop(.server) {
                logger.info("attempt no longer current; stopping job", metadata: ["attempt.state": "\(ack.state)"])
            }
        } catch {
            if let error = error as? ClientError, error.status == 404 || error.status == 409 || error.status == 410 {
                if control.stop(.server) {
                    logger.info("attempt gone on the server; stopping job", metadata: ["error": "\(error)"])
                }
                return
            }
            logger.warning("log chunk dropped", metadata: ["log.seq": "\(chunk.seq)", "error": "\(error)"])
        }
    }
}
