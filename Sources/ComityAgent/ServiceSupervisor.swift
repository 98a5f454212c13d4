import AsyncHTTPClient
import ComityAPI
import ComityCore
import Logging
import Synchronization

/// Runs an inference job (`kind: inference`) as a service: a replica on a port of its own, health-checked,
/// restarted by its policy with backoff, its status reported as it changes.
///
/// It is a ``JobExecutor`` around the host's own executor, so every start of the replica's process gets the same
/// limits and sandbox as a batch job. The port is picked once and kept across restarts (a new one only when
/// something else took it meanwhile). A stop through the attempt's ``JobControl`` ends the service without a
/// restart; a policy that says no restart ends the attempt with the process's outcome, as for a batch job. The
/// job's `max_runtime` bounds the whole service, not each start.
package struct ServiceSupervisor: JobExecutor {
    /// When and how often the supervisor checks and restarts, from the job's ``ServiceSpec``.
    package struct Policy: Sendable, Hashable {
        package var restart: ServiceSpec.RestartPolicy
        package var healthCheck: HealthCheck
        /// Time between health checks once a start has passed its first one.
        package var healthInterval: Duration
        /// Time between health checks from a start until the first one passes (at most 1 s, so a replica is
        /// known healthy soon after it listens).
        package var startupInterval: Duration
        /// How long one check may take before it counts as failed.
        package var healthTimeout: Duration
        /// The delay before the first restart; it doubles with each restart up to ``maxBackoff``.
        package var initialBackoff: Duration = .seconds(1)
        package var maxBackoff: Duration = .seconds(60)
        /// A process that stayed healthy this long before it ended is restarted after ``initialBackoff`` again.
        package var resetAfter: Duration = .seconds(60)

        /// The policy of `spec` (defaults where it says nothing).
        package init(_ spec: ServiceSpec) {
            restart = spec.restart
            healthCheck = HealthCheck(spec)
            healthInterval = .seconds(max(1, spec.healthIntervalSeconds))
            startupInterval = min(healthInterval, .seconds(1))
            healthTimeout = min(max(healthInterval, .seconds(2)), .seconds(10))
        }

        /// Whether a process that ended this way is started again.
        func restarts(after outcome: JobRunner.Outcome) -> Bool {
            switch (restart, outcome) {
            case (.never, _), (_, .stopped): false
            case (.always, _): true
            case (.onFailure, .exited(let code)): code != 0
            case (.onFailure, .failed): true
            case (.onFailure, .oomKilled): true
            }
        }
    }

    package var policy: Policy
    /// The host's executor (``AgentService/makeExecutor(logger:)``), which runs each start of the process.
    package var executor: any JobExecutor
    /// The host name or address put in the replica's URL (`--advertise-address`).
    package var advertiseAddress: String
    /// Sends the HTTP health checks.
    package var http: HTTPClient
    package var logger: Logger
    /// Called with each new status of the replica, synchronously and in order (it must not block), and with `nil`
    /// once the service has ended.
    package var onStatus: @Sendable (ServiceStatus?) -> Void

    package init(
        policy: Policy,
        executor: any JobExecutor,
        advertiseAddress: String = "127.0.0.1",
        http: HTTPClient = .shared,
        logger: Logger,
        onStatus: @escaping @Sendable (ServiceStatus?) -> Void
    ) {
        self.policy = policy
        self.executor = executor
        self.advertiseAddress = advertiseAddress
        self.http = http
        self.logger = logger
        self.onStatus = onStatus
    }

    /// Runs the service until its policy lets it end or a stop is requested.
    ///
    /// Each start gets `PORT` and `COMITY_SERVICE_PORT` in its environment; `onStart` is called for every start
    /// with its process group id. Output of all starts goes to `sink` numbered as one sequence, with a line from the
    /// agent (`[comity-agent: …]`) on stderr whenever the process ended and is restarted.
    package func run(
        _ job: JobRunner.Job,
        control: JobControl,
        onStart: @escaping @Sendable (Int32) async -> Void,
        sink: @escaping @Sendable (LogAppend) async -> Void
    ) async -> JobRunner.Outcome {
        if let reason = control.stopReason { return .stopped(reason) }
        let port: UInt16
        do {
            port = try ServicePort.reserve()
        } catch {
            return .failed("cannot give the service a port: \(error)")
        }
        let replica = Replica(attempt: job.attempt, port: port, host: advertiseAddress, onStatus: onStatus)
        defer {
            ServicePort.release(replica.port)
            onStatus(nil)
        }
        return await withTaskGroup(of: Void.self) { group in
            group.addTask {
                for await event in control.events {
                    guard case .stop = event, let reason = control.stopReason else { continue }
                    replica.stop(reason)
                }
            }
            if let seconds = job.maxRuntimeSeconds {
                group.addTask {
                    do { try await Task.sleep(for: .seconds(seconds)) } catch { return }
                    control.stop(.maxRuntime(seconds: seconds))
                }
            }
            let outcome = await supervise(job, replica: replica, control: control, onStart: onStart, sink: sink)
            group.cancelAll()
            return outcome
        }
    }

    private func supervise(
        _ job: JobRunner.Job,
        replica: Replica,
        control: JobControl,
        onStart: @escaping @Sendable (Int32) async -> Void,
        sink: @escaping @Sendable (LogAppend) async -> Void
    ) async -> JobRunner.Outcome {
        var delay = policy.initialBackoff
        var restarts = 0
        while true {
            if let reason = control.stopReason { return .stopped(reason) }
            let outcome: JobRunner.Outcome
            if let problem = replica.ensureFreePort() {
                outcome = .failed(problem)
            } else {
                outcome = await runOnce(job, replica: replica, restarts: restarts, onStart: onStart, sink: sink)
            }
            let healthyFor = replica.endRun()
            if let reason = control.stopReason { return .stopped(reason) }
            if case .stopped(let reason) = outcome { return .stopped(reason) }
            let ended = Self.describe(outcome)
            guard policy.restarts(after: outcome) else {
                replica.report(healthy: false, message: ended)
                logger.info("service ended", metadata: ["service.outcome": "\(ended)"])
                return outcome
            }
            if healthyFor >= policy.resetAfter { delay = policy.initialBackoff }
            let message = "\(ended); restarting in \(Self.format(delay))"
            replica.report(healthy: false, message: message)
            logger.warning(
                "service process ended; restarting",
                metadata: [
                    "service.outcome": "\(ended)", "retry.in": "\(Self.format(delay))", "restarts": "\(restarts)",
                ]
            )
            await replica.note("[comity-agent: service \(message)]\n", sink: sink)
            if await replica.waitUnlessStopped(delay) { return .stopped(control.stopReason ?? .shutdown) }
            delay = min(delay * 2, policy.maxBackoff)
            restarts += 1
        }
    }

    /// Starts the process once, checks its health while it runs, and returns how it ended.
    private func runOnce(
        _ job: JobRunner.Job,
        replica: Replica,
        restarts: Int,
        onStart: @escaping @Sendable (Int32) async -> Void,
        sink: @escaping @Sendable (LogAppend) async -> Void
    ) async -> JobRunner.Outcome {
        let child = replica.beginRun(restarts: restarts)
        var start = job
        start.maxRuntimeSeconds = nil
        start.environment["PORT"] = String(replica.port)
        start.environment["COMITY_SERVICE_PORT"] = String(replica.port)
        let port = replica.port
        let environment = start.environment
        logger.info("service starting", metadata: ["service.port": "\(port)", "restarts": "\(restarts)"])
        return await withTaskGroup(of: Void.self) { group in
            group.addTask {
                await checkHealth(replica, port: port, environment: environment, workDirectory: job.workDirectory)
            }
            let outcome = await executor.run(start, control: child, onStart: onStart, sink: replica.renumbered(sink))
            group.cancelAll()
            await group.waitForAll()
            return outcome
        }
    }

    /// Checks the replica's health until cancelled: every ``Policy/startupInterval`` until a check passes, then
    /// every ``Policy/healthInterval``.
    private func checkHealth(_ replica: Replica, port: UInt16, environment: [String: String], workDirectory: String)
        async
    {
        var hasPassed = false
        while true {
            do {
                try await Task.sleep(for: hasPassed ? policy.healthInterval : policy.startupInterval)
            } catch {
                return
            }
            let failure = await policy.healthCheck.failure(
                port: port,
                environment: environment,
                workDirectory: workDirectory,
                timeout: policy.healthTimeout,
                http: http
            )
            if Task.isCancelled { return }
            if let change = replica.report(healthy: failure == nil, message: failure) {
                if change {
                    logger.info("service healthy", metadata: ["service.port": "\(port)"])
                } else {
                    logger.warning(
                        "service unhealthy",
                        metadata: ["service.port": "\(port)", "reason": "\(failure ?? "")"]
                    )
                }
            }
            if failure == nil { hasPassed = true }
        }
    }

    /// How a start ended, for the status message.
    static func describe(_ outcome: JobRunner.Outcome) -> String {
        switch outcome {
        case .exited(let code) where code > 128: "process exited with code \(code) (signal \(code - 128))"
        case .exited(let code): "process exited with code \(code)"
        case .stopped(let reason): "process \(reason)"
        case .failed(let message): message
        case .oomKilled(let message): "OOM_KILLED: \(message)"
        }
    }

    /// `500ms`, `1s`, `1.5s`, `60s`.
    static func format(_ duration: Duration) -> String {
        let millis = duration.components.seconds * 1_000 + duration.components.attoseconds / 1_000_000_000_000_000
        if millis < 1_000 { return "\(millis)ms" }
        if millis % 1_000 == 0 { return "\(millis / 1_000)s" }
        return "\(Double(millis) / 1_000)s"
    }
}

/// The state of one running service: its port, its status, the control of the current start, its log numbering.
private final class Replica: Sendable {
    private struct State {
        var port: UInt16
        var status: ServiceStatus
        var child: JobControl?
        var stopReason: StopReason?
        var healthySince: ContinuousClock.Instant?
        var lastSeq: Int64 = 0
    }

    private let state: Mutex<State>
    private let host: String
    private let onStatus: @Sendable (ServiceStatus?) -> Void
    /// Signalled when the service is asked to stop (ends a backoff wait).
    private let stopped = WakeSignal()

    init(attempt: Int64, port: UInt16, host: String, onStatus: @escaping @Sendable (ServiceStatus?) -> Void) {
        let status = ServiceStatus(
            attempt: attempt,
            url: Self.url(host: host, port: port),
            healthy: false,
            restarts: 0,
            message: "starting"
        )
        state = Mutex(State(port: port, status: status))
        self.host = host
        self.onStatus = onStatus
        onStatus(status)
    }

    var port: UInt16 { state.withLock { $0.port } }

    static func url(host: String, port: UInt16) -> String {
        let bracketed = host.contains(":") && !host.hasPrefix("[") ? "[\(host)]" : host
        return "http://\(bracketed):\(port)"
    }

    /// Passes the stop to the current start (and every later one), and ends a backoff wait.
    func stop(_ reason: StopReason) {
        let child = state.withLock { state -> JobControl? in
            if state.stopReason == nil { state.stopReason = reason }
            return state.child
        }
        child?.stop(reason)
        stopped.signal()
    }

    /// Keeps the port when nothing listens on it; otherwise moves to a new one.
    ///
    /// - Returns: why no port could be had, or `nil`.
    func ensureFreePort() -> String? {
        let old = port
        if ServicePort.isFree(old) { return nil }
        let new: UInt16
        do {
            new = try ServicePort.reserve()
        } catch {
            return "port \(old) is taken and no other is free: \(error)"
        }
        ServicePort.release(old)
        update { state in
            state.port = new
            state.status.url = Self.url(host: host, port: new)
        }
        return nil
    }

    /// A new control for the next start, already stopped when the service is; publishes the start.
    func beginRun(restarts: Int) -> JobControl {
        let child = JobControl()
        let reason = update { state -> StopReason? in
            state.child = child
            state.status.restarts = restarts
            state.status.healthy = false
            state.status.message = "starting"
            return state.stopReason
        }
        if let reason { child.stop(reason) }
        return child
    }

    /// Ends a start; returns how long it had been healthy without a break when it ended.
    func endRun() -> Duration {
        state.withLock { state in
            state.child = nil
            defer { state.healthySince = nil }
            return state.healthySince.map { ContinuousClock.now - $0 } ?? .zero
        }
    }

    /// Records a health result.
    ///
    /// - Returns: `true` when the replica became healthy, `false` when it became unhealthy, `nil` when its health
    ///   did not change.
    @discardableResult
    func report(healthy: Bool, message: String?) -> Bool? {
        update { state -> Bool? in
            let wasHealthy = state.status.healthy
            state.status.healthy = healthy
            state.status.message = healthy ? nil : message
            if healthy, state.healthySince == nil { state.healthySince = .now }
            if !healthy { state.healthySince = nil }
            return wasHealthy == healthy ? nil : healthy
        }
    }

    /// Wraps `sink` so that this start's chunks continue the numbering of earlier starts.
    func renumbered(_ sink: @escaping @Sendable (LogAppend) async -> Void) -> @Sendable (LogAppend) async -> Void {
        let base = state.withLock { $0.lastSeq }
        return { [self] chunk in
            var chunk = chunk
            chunk.seq += base
            let seq = chunk.seq
            state.withLock { $0.lastSeq = max($0.lastSeq, seq) }
            await sink(chunk)
        }
    }

    /// Sends one line of the agent's own to the log, on stderr.
    func note(_ text: String, sink: @escaping @Sendable (LogAppend) async -> Void) async {
        let seq = state.withLock { state in
            state.lastSeq += 1
            return state.lastSeq
        }
        await sink(LogAppend(seq: seq, stream: .stderr, data: text))
    }

    /// Waits out a backoff delay.
    ///
    /// - Returns: `true` when a stop came first (or the task was cancelled).
    func waitUnlessStopped(_ delay: Duration) async -> Bool {
        if state.withLock({ $0.stopReason != nil }) { return true }
        do {
            _ = try await stopped.wait(for: delay)
        } catch {
            return true
        }
        return state.withLock { $0.stopReason != nil }
    }

    /// Changes the state and publishes the status when it changed, under the lock so statuses go out in order.
    private func update<T>(_ change: (inout State) -> T) -> T {
        state.withLock { state in
            let before = state.status
            let result = change(&state)
            if state.status != before { onStatus(state.status) }
            return result
        }
    }
}
