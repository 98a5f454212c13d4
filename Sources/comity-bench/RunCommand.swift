import ArgumentParser
import AsyncHTTPClient
import ComityAPI
import ComityClient
import ComityCore
import ComityStore
import Foundation
import Logging
import PostgresNIO
import Synchronization

/// `comity-bench run`: enrolls simulated hosts, runs their agents in this process, then the lifecycle and/or
/// dispatch phases against them.
struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Lifecycle throughput and dispatch latency against a running comity-server, with simulated agents.",
        discussion: """
            Creates the federation through the API (jurisdictions EU ⊃ DE, FR; KE; IN; regions eu-de-1, eu-fr-1, \
            ke-nbo-1, in-blr-1; a partner per region; project bench), enrolls --hosts simulated hosts with join \
            tokens (1/4 8×H100 80Gi, 1/4 4×A100 40Gi, 1/2 CPU-only; spread over the regions) and runs their agents \
            as tasks of this process, each a real API client with its own credential. Then:

            lifecycle: submits --jobs no-op jobs (command true, 1 CPU, 1Gi) as array submissions of --array-size, \
            --submit-concurrency in flight, and waits until every job has been placed, started and finished.

            dispatch: on the idle pool, submits --dispatch-jobs jobs one at a time (POST /v1/jobs) and measures the \
            time from the submit returning (and from the request starting) to the agent receiving the assignment \
            and to its start being acknowledged.

            Results are one JSON object (--out FILE, or standard output); progress goes to standard error.
            """
    )

    @OptionGroup var options: RunOptions

    func run() async throws {
        try await options.execute(phases: try options.parsedPhases())
    }
}

/// `comity-bench lifecycle` (the run command with the lifecycle phase only).
struct LifecycleCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lifecycle", abstract: "Lifecycle throughput only (same options as run).")
    @OptionGroup var options: RunOptions
    func run() async throws { try await options.execute(phases: [.lifecycle]) }
}

/// `comity-bench dispatch` (the run command with the dispatch phase only; it enrolls its own hosts).
struct DispatchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dispatch", abstract: "Dispatch latency only (same options as run).")
    @OptionGroup var options: RunOptions
    func run() async throws { try await options.execute(phases: [.dispatch]) }
}

enum Phase: String, CaseIterable {
    case lifecycle, dispatch
}

struct RunOptions: ParsableArguments {
    @Option(help: "Server URL, e.g. http://127.0.0.1:8700.")
    var server: String

    @Option(help: "An admin token.")
    var token: String

    @Option(help: "No-op jobs of the lifecycle phase.")
    var jobs: Int = 100_000

    @Option(help: "Simulated hosts (and agents).")
    var hosts: Int = 1_000

    @Option(help: "Jobs of the dispatch phase, submitted one at a time.")
    var dispatchJobs: Int = 1_000

    @Option(help: "Phases to run, comma-separated: lifecycle,dispatch.")
    var phases: String = "lifecycle,dispatch"

    @Option(help: "Jobs per array submission in the lifecycle phase.")
    var arraySize: Int = 5_000

    @Option(help: "Array submissions in flight at once.")
    var submitConcurrency: Int = 4

    @Option(help: "Start/end report requests in flight at once, all simulated agents together (each agent has at most one in flight).")
    var maxInFlight: Int = 256

    @Option(help: "Give up waiting for the lifecycle phase after this many seconds (figures then cover the jobs finished).")
    var lifecycleTimeout: Int = 600

    @Option(help: "Write the results here (JSON) instead of standard output.")
    var out: String?

    @Option(help: "comity-server's pid: its CPU time per phase is reported.")
    var serverPid: Int32?

    @Option(help: "The PostgreSQL postmaster's pid: the CPU time of it and its children per phase is reported.")
    var postmasterPid: Int32?

    @Option(
        help: """
            The server's database. Used only when the lifecycle phase runs past --lifecycle-timeout: the jobs still             queued are then cancelled directly in the database, so that the pool is idle again for the next phase.
            """)
    var databaseURL: String?

    func parsedPhases() throws -> [Phase] {
        try phases.split(separator: ",").map { name in
            guard let phase = Phase(rawValue: name.trimmingCharacters(in: .whitespaces)) else {
                throw ValidationError("--phases: expected lifecycle and/or dispatch, got \"\(name)\"")
            }
            return phase
        }
    }

    func validate() throws {
        guard jobs > 0, hosts > 0, dispatchJobs > 0, arraySize > 0, submitConcurrency > 0 else {
            throw ValidationError("--jobs, --hosts, --dispatch-jobs, --array-size and --submit-concurrency must be positive")
        }
        _ = try parsedPhases()
    }

    func execute(phases: [Phase]) async throws {
        _ = BenchLogging.bootstrap
        var results = Results()
        try await withHTTPClient { http in
            let admin = ComityClient(server: server, token: token, http: http)
            _ = try await admin.whoami()
            say("creating the federation")
            try await Federation.ensure(admin: admin)
            let researcher = try await Federation.researcher(admin: admin)

            say("enrolling \(hosts) simulated hosts")
            let enrollStart = Ticks.now()
            let enrolled = try await enrollHosts(count: hosts, admin: admin)
            let enrollSeconds = Ticks.seconds(from: enrollStart, to: Ticks.now())
            results.set("hosts", enrolled.count)
            results.set("enroll_hosts_per_s", Double(enrolled.count) / enrollSeconds)
            say("enrolled \(enrolled.count) hosts in \(String(format: "%.1f", enrollSeconds)) s")

            let recorder = Recorder()
            let control = AgentControl(maxInFlight: maxInFlight)
            results.set("max_in_flight", maxInFlight)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for host in enrolled {
                    let agent = SimulatedAgent(host: host, client: admin.with(token: host.token), recorder: recorder, control: control)
                    group.addTask { await agent.run() }
                }
                // Let every agent's first long-poll reach the server before measuring.
                let deadline = Ticks.now() + 60_000_000_000
                while recorder.snapshot().pollers < enrolled.count, Ticks.now() < deadline {
                    try await Task.sleep(for: .milliseconds(50))
                }
                try await Task.sleep(for: .seconds(1))

                for (index, phase) in phases.enumerated() {
                    if index > 0 { try await Task.sleep(for: .seconds(2)) }
                    if index > 0, phase == .dispatch, let postmasterPid {
                        // An idle pool: the lifecycle's churn (100,000 jobs through jobs, attempts, events and the
                        // ledger) leaves autovacuum work behind; dispatch is measured once it is done.
                        let waited = try await PostgresProcesses.waitUntilNoAutovacuum(postmaster: postmasterPid, timeout: .seconds(120))
                        results["dispatch_settle_s"] = .number((waited * 10).rounded() / 10)
                        results.note("dispatch: measured once autovacuum had finished with the lifecycle's tables (after \(String(format: "%.1f", waited)) s)")
                    }
                    let accounting = await PhaseAccounting.begin(
                        server: server, http: http, serverPID: serverPid, postmasterPID: postmasterPid)
                    switch phase {
                    case .lifecycle: try await lifecycle(researcher: researcher, recorder: recorder, results: &results)
                    case .dispatch: try await dispatch(researcher: researcher, recorder: recorder, results: &results)
                    }
                    await accounting.end(phase.rawValue, server: server, http: http, into: &results)
                    if phase == .lifecycle, results["lifecycle_timed_out"] != nil {
                        control.draining.withLock { $0 = true }
                        do {
                            try await drainAfterTimeout(recorder: recorder, results: &results)
                            // The agents drop what they still hold of the cancelled jobs.
                            let deadline = Ticks.now() + 60_000_000_000
                            while control.backlog.withLock({ $0 }) > 0, Ticks.now() < deadline {
                                try await Task.sleep(for: .milliseconds(100))
                            }
                            try await Task.sleep(for: .seconds(1))
                        } catch {
                            results.note("lifecycle: cancelling the jobs left after the time limit failed: \(String(reflecting: error))")
                        }
                        control.draining.withLock { $0 = false }
                    }
                }
                let snapshot = recorder.snapshot()
                results["agent_errors"] = .object(snapshot.errors.mapValues { JSONValue.number(Double($0)) })
                control.permits.close()
                group.cancelAll()
            }
        }
        try results.write(to: out)
    }

    static let noOp: JSONValue = .object([
        "name": .string("noop"),
        "project": .string(Federation.project),
        "command": .array([.string("true")]),
        "resources": .object(["cpus": .number(1), "memory": .string("1Gi")]),
    ])

    // MARK: Lifecycle

    func lifecycle(researcher: ComityClient, recorder: Recorder, results: inout Results) async throws {
        say("lifecycle: \(jobs) no-op jobs on \(hosts) hosts, arrays of \(arraySize), \(submitConcurrency) in flight")
        recorder.reset(tracking: false)
        var ranges: [String] = []
        var low = 1
        while low <= jobs {
            let high = min(jobs, low + arraySize - 1)
            ranges.append("\(low)-\(high)")
            low = high + 1
        }
        let start = Ticks.now()
        var submitted = 0
        try await withThrowingTaskGroup(of: Int.self) { group in
            for (index, range) in ranges.enumerated() {
                if index >= submitConcurrency, let count = try await group.next() { submitted += count }
                group.addTask {
                    try await retrying(attempts: 3) { try await researcher.submitArray(Self.noOp, array: range).count }
                }
            }
            while let count = try await group.next() { submitted += count }
        }
        let submitEnd = Ticks.now()
        let submitSeconds = Ticks.seconds(from: start, to: submitEnd)
        say("lifecycle: \(submitted) jobs submitted in \(String(format: "%.2f", submitSeconds)) s")
        guard submitted == jobs else { throw BenchError("lifecycle: the server created \(submitted) jobs, expected \(jobs)") }

        let deadline = start + UInt64(lifecycleTimeout) * 1_000_000_000
        var lastReport = Ticks.now()
        var snapshot = recorder.snapshot()
        while snapshot.finished < jobs, Ticks.now() < deadline {
            try await Task.sleep(for: .milliseconds(20))
            snapshot = recorder.snapshot()
            if Ticks.now() - lastReport > 10_000_000_000 {
                lastReport = Ticks.now()
                let elapsed = Ticks.seconds(from: start, to: lastReport)
                say("lifecycle: +\(Int(elapsed)) s received \(snapshot.received) started \(snapshot.started) finished \(snapshot.finished) (\(Int(Double(snapshot.finished) / elapsed)) jobs/s so far)")
            }
        }
        let completed = snapshot.finished
        let timedOut = completed < jobs
        let end = timedOut ? Ticks.now() : snapshot.lastFinished
        let placedEnd = snapshot.received >= jobs ? snapshot.lastReceived : end
        results.set("lifecycle_jobs", jobs)
        results.set("lifecycle_hosts", hosts)
        results.set("lifecycle_completed", completed)
        results.set("lifecycle_seconds", Ticks.seconds(from: start, to: end), digits: 2)
        results.set("submit_seconds", submitSeconds, digits: 2)
        results.set("submit_jobs_per_s", Double(jobs) / submitSeconds)
        results.set("placements_per_s", Double(min(snapshot.received, jobs)) / Ticks.seconds(from: start, to: placedEnd))
        results.set("lifecycle_jobs_per_s", Double(completed) / Ticks.seconds(from: start, to: end))
        results.set("first_assignment_ms", Ticks.seconds(from: start, to: snapshot.firstReceived) * 1000, digits: 1)
        results.set("lifecycle_polls", snapshot.polls)
        results.set("lifecycle_empty_polls", snapshot.emptyPolls)
        results.set("lifecycle_max_assignments_per_poll", snapshot.maxBatch)
        results.set("lifecycle_heartbeats", snapshot.heartbeats)
        if timedOut {
            results.set("lifecycle_timed_out", true)
            results.note("lifecycle stopped after \(lifecycleTimeout) s with \(completed) of \(jobs) jobs finished; its rates cover those jobs")
        }
        say("lifecycle: \(completed) jobs finished in \(String(format: "%.2f", Ticks.seconds(from: start, to: end))) s")
    }

    /// After a lifecycle phase that ran out of time: cancels the jobs not started yet (in the database, as `cancel`
    /// would: the API has no bulk cancel) and waits until the agents have finished the running ones, so that the
    /// next phase finds an idle pool.
    func drainAfterTimeout(recorder: Recorder, results: inout Results) async throws {
        guard let databaseURL else {
            results.note("lifecycle: no --database-url, so the jobs not started were not cancelled; later phases share the pool with them")
            return
        }
        let logger = BenchLogging.logger("comity.bench.run")
        let url = try DatabaseURL(databaseURL)
        let cancelled = try await PostgresClient.with(try url.clientConfiguration(maxConnections: 1), logger: logger) { client in
            // As `comity cancel` does for jobs not yet started: the job, and its attempt when assigned, end cancelled.
            // In batches that skip rows the server holds, so that the cancel never waits on (or deadlocks with) the
            // server's own transactions; until nothing is left (a pass may assign queued jobs meanwhile).
            var count: Int64 = 0
            while true {
                let assigned = try await client.query(
                    """
                    with c as (
                        select a.id as attempt, j.id as job from attempts a join jobs j on j.current_attempt = a.id
                        where j.state = 'assigned' and a.state = 'assigned'
                        order by a.id limit 2000 for update of a, j skip locked
                    ), a as (
                        update attempts set state = 'cancelled', ended_at = now(), reason = 'cancelled by ops/bench: lifecycle time limit'
                        where id in (select attempt from c)
                    ), j as (
                        update jobs set state = 'cancelled', finished_at = now(), reason = 'cancelled by ops/bench: lifecycle time limit'
                        where id in (select job from c) returning 1
                    ) select count(*) from j
                    """, logger: logger
                ).decode(Int64.self).collect().first ?? 0
                let queued = try await client.query(
                    """
                    with c as (
                        select id from jobs where state = 'queued' order by id limit 10000 for update skip locked
                    ), j as (
                        update jobs set state = 'cancelled', finished_at = now(), reason = 'cancelled by ops/bench: lifecycle time limit'
                        where id in (select id from c) returning 1
                    ) select count(*) from j
                    """, logger: logger
                ).decode(Int64.self).collect().first ?? 0
                count += assigned + queued
                if assigned + queued == 0 {
                    let left = try await client.query("select count(*) from jobs where state in ('queued', 'assigned')", logger: logger)
                        .decode(Int64.self).collect().first ?? 0
                    if left == 0 { break }
                    try await Task.sleep(for: .milliseconds(100))
                }
            }
            let deadline = Ticks.now() + 120_000_000_000
            while Ticks.now() < deadline {
                let active = try await client.query("select count(*) from jobs where state in ('assigned', 'running')", logger: logger)
                    .decode(Int64.self).collect().first ?? 0
                if active == 0 { break }
                try await Task.sleep(for: .milliseconds(200))
            }
            return Int(count)
        }
        results.set("lifecycle_cancelled_unstarted", cancelled)
        say("lifecycle: cancelled the \(cancelled) jobs not started; the pool is idle again")
    }

    // MARK: Dispatch

    func dispatch(researcher: ComityClient, recorder: Recorder, results: inout Results) async throws {
        say("dispatch: \(dispatchJobs) jobs one at a time on the idle pool")
        recorder.reset(tracking: true)
        var received: [Double] = []
        var receivedFromRequest: [Double] = []
        var started: [Double] = []
        var startedFromRequest: [Double] = []
        var submitRoundTrip: [Double] = []
        var agentFirst = 0
        var lost = 0
        for index in 0..<dispatchJobs {
            // An idle pool: jobs arrive apart, not back to back.
            try await Task.sleep(for: .milliseconds(Int.random(in: 5...25)))
            let requestStart = Ticks.now()
            let job = try await researcher.submit(Self.noOp)
            let returned = Ticks.now()
            guard await recorder.waitFinished(job.id, timeout: .seconds(30)) else {
                lost += 1
                say("dispatch: job \(job.id) was not finished within 30 s")
                continue
            }
            let (receivedAt, startedAt) = recorder.state.withLock { ($0.receivedAt[job.id]!, $0.startedAt[job.id]!) }
            let afterReturn = Ticks.signedMilliseconds(from: returned, to: receivedAt)
            if afterReturn < 0 { agentFirst += 1 }
            received.append(max(0, afterReturn))
            receivedFromRequest.append(Ticks.signedMilliseconds(from: requestStart, to: receivedAt))
            started.append(max(0, Ticks.signedMilliseconds(from: returned, to: startedAt)))
            startedFromRequest.append(Ticks.signedMilliseconds(from: requestStart, to: startedAt))
            submitRoundTrip.append(Ticks.signedMilliseconds(from: requestStart, to: returned))
            if (index + 1) % 250 == 0 { say("dispatch: \(index + 1) jobs") }
        }
        func put(_ prefix: String, _ values: [Double]) {
            let p = Percentiles(values)
            results.set("\(prefix)_p50_ms", p.at(50), digits: 2)
            results.set("\(prefix)_p95_ms", p.at(95), digits: 2)
            results.set("\(prefix)_p99_ms", p.at(99), digits: 2)
            results.set("\(prefix)_max_ms", p.max, digits: 2)
        }
        put("dispatch", received)
        put("dispatch_from_request", receivedFromRequest)
        put("dispatch_start", started)
        put("dispatch_start_from_request", startedFromRequest)
        put("dispatch_submit", submitRoundTrip)
        results.set("dispatch_jobs", received.count)
        results.set("dispatch_agent_first", agentFirst)
        if lost > 0 {
            results.set("dispatch_lost", lost)
            results.note("dispatch: \(lost) jobs did not reach an agent within 30 s; they are left out of the percentiles")
        }
        say("dispatch: p50 \(String(format: "%.2f", Percentiles(received).at(50))) ms, p99 \(String(format: "%.2f", Percentiles(received).at(99))) ms")
    }
}
