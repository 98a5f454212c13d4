import ComityAPI
import ComityClient
import ComityCore
import Foundation
import Logging
import ServiceLifecycle

extension AgentService {
    /// Heartbeats and long-polls until graceful shutdown; each assignment runs in its own child task.
    ///
    /// The heartbeat outlives the poll loop: it keeps renewing the leases of jobs that are being stopped for shutdown
    /// until every attempt has reported its finish.
    func runLoops(_ session: Session, registry: AttemptRegistry) async throws {
        try await withThrowingDiscardingTaskGroup { loops in
            loops.addTask { try await heartbeatLoop(session, registry: registry) }
            try await withThrowingDiscardingTaskGroup { attempts in
                try await pollLoop(session, registry: registry) { assignment, control in
                    attempts.addTask {
                        try await runAttempt(assignment, control: control, session: session, registry: registry)
                    }
                }
            }
            loops.cancelAll()
        }
    }

    /// Sends a heartbeat every `heartbeatSeconds` with the attempts held and the state of the services among them, and
    /// at once when a service replica's health changes; stops the attempts the server lists.
    ///
    /// Returns when cancelled; throws ``AgentError/Code/unauthorized`` on a 401.
    func heartbeatLoop(_ session: Session, registry: AttemptRegistry) async throws {
        let interval = Duration.seconds(max(1, session.credential.heartbeatSeconds))
        // The first heartbeat brings the server's inventory up to date.
        var resources: HostResources? = session.resources
        var backoff = Backoff()
        while !Task.isCancelled {
            let delay: Duration
            do {
                let attempts = registry.attempts
                let services = session.services.statuses(of: attempts)
                let response = try await session.client.heartbeat(
                    HeartbeatRequest(
                        attempts: attempts,
                        resources: resources,
                        services: services.isEmpty ? nil : services
                    )
                )
                resources = nil
                if backoff.failures > 0 {
                    logger.info("server reachable again", metadata: ["failures": "\(backoff.failures)"])
                }
                backoff.reset()
                for attempt in registry.stop(response.stop, reason: .server) {
                    logger.info("server asked to stop attempt", metadata: ["attempt.id": "\(attempt)"])
                }
                delay = interval
            } catch {
                if Task.isCancelled { return }
                try failIfUnauthorized(error, server: session.client.server)
                delay = min(backoff.next(), interval)
                logger.log(
                    level: backoff.isWorthWarning ? .warning : .debug,
                    "heartbeat failed",
                    metadata: ["error": "\(error)", "retry.in": "\(delay)", "failures": "\(backoff.failures)"]
                )
            }
            // A service replica's health change ends the wait early, so the server learns of it at once.
            do { _ = try await session.services.changed.wait(for: delay) } catch { return }
        }
    }

    /// Long-polls for assignments until shutdown (or cancellation), handing each new one to `start`.
    func pollLoop(
        _ session: Session,
        registry: AttemptRegistry,
        start: (Assignment, JobControl) -> Void
    ) async throws {
        var backoff = Backoff()
        let wait = configuration.pollWaitSeconds
        let client = session.client
        while !Task.isCancelled, !Task.isShuttingDownGracefully, !registry.isClosed {
            let assignments: [Assignment]
            do {
                assignments = try await cancelWhenGracefulShutdown { try await client.assignments(waitSeconds: wait) }
                backoff.reset()
            } catch {
                if Task.isCancelled || Task.isShuttingDownGracefully || registry.isClosed { break }
                try failIfUnauthorized(error, server: client.server)
                let delay = backoff.next()
                logger.log(
                    level: backoff.isWorthWarning ? .warning : .debug,
                    "polling for assignments failed",
                    metadata: ["error": "\(error)", "retry.in": "\(delay)", "failures": "\(backoff.failures)"]
                )
                do { try await Task.sleep(for: delay) } catch { break }
                continue
            }
            var new = 0
            for assignment in assignments {
                // The server lists an assignment until its start is acknowledged: one already held is not new.
                guard let control = registry.register(assignment.attempt) else { continue }
                new += 1
                start(assignment, control)
            }
            if new == 0, !assignments.isEmpty {
                // Only assignments whose start is in flight came back; give the starts a moment.
                do { try await Task.sleep(for: .milliseconds(200)) } catch { break }
            }
        }
        logger.info("stopped polling for assignments")
    }
}
