import ComityStore
import Logging
import Metrics
import ServiceLifecycle

/// Runs scheduling passes when PostgreSQL says something changed, and every `interval` as a safety net.
///
/// Any number of replicas may run this: each pass holds a transaction-scoped advisory lock, so PostgreSQL
/// serializes them and no leader election is needed.
struct SchedulerService: Service {
    let store: Store
    let notifier: Notifier
    let interval: Duration
    let logger: Logger
    let passTimer = Metrics.Timer(label: "comity_scheduler_pass_seconds", preferredDisplayUnit: .seconds)
    let placements = Counter(label: "comity_placements_total")

    func run() async throws {
        try? await cancelWhenGracefulShutdown {
            // Where passes spend their time, per step (`comity_scheduler_pass_part_seconds{part=...}`, see
            // `Store.timedSchedulingPass`); its clock costs a few reads of the time per pass.
            var partTimers: [String: Metrics.Timer] = [:]
            while !Task.isCancelled {
                let generation = notifier.generation(of: .scheduler)
                var again = false
                do {
                    let start = ContinuousClock.now
                    let (result, parts) = try await store.timedSchedulingPass()
                    passTimer.record(duration: ContinuousClock.now - start)
                    for (part, ms) in parts where part != "rule_evaluations" {
                        let timer = partTimers[part] ?? Metrics.Timer(label: "comity_scheduler_pass_part_seconds", dimensions: [("part", part)], preferredDisplayUnit: .seconds)
                        partTimers[part] = timer
                        timer.recordNanoseconds(Int64(ms * 1_000_000))
                    }
                    placements.increment(by: result.placed)
                    if result.placed > 0 {
                        logger.debug("scheduling pass", metadata: [
                            "examined": "\(result.examined)", "hosts": "\(result.hosts)", "placed": "\(result.placed)",
                        ])
                    }
                    again = result.headWasFull && result.placed > 0
                } catch where !Task.isCancelled {
                    logger.error("scheduling pass failed", metadata: ["error": "\(String(reflecting: error))"])
                    try await Task.sleep(for: .seconds(1))
                }
                if !again { await notifier.wait(for: .scheduler, since: generation, timeout: interval) }
            }
        }
    }
}

/// Expires attempts whose agents stopped renewing their leases, and marks silent hosts down.
/// Also accounts contribution and usage for fair sharing every `accountingInterval`.
struct ReaperService: Service {
    let store: Store
    let interval: Duration
    let logger: Logger
    var accountingInterval: Duration = .seconds(30)

    func run() async throws {
        try? await cancelWhenGracefulShutdown {
            var lastAccounting = ContinuousClock.now - accountingInterval
            while !Task.isCancelled {
                do {
                    try await store.reap()
                    try await store.preemptDue()
                    try await store.enforceAnnouncedRules()
                    if ContinuousClock.now - lastAccounting >= accountingInterval {
                        lastAccounting = ContinuousClock.now
                        try await store.accountSharing()
                    }
                } catch where !Task.isCancelled {
                    logger.error("reaper failed", metadata: ["error": "\(String(reflecting: error))"])
                }
                try await Task.sleep(for: interval)
            }
        }
    }
}
