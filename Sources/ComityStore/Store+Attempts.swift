import ComityAPI
import ComityCore
import Foundation
import Logging
import PostgresNIO

/// The agent's side of an attempt: fetch, start, log, finish. Every call is fenced by the attempt id and the host.
extension Store {
    /// Attempts assigned to `host` and not started yet.
    ///
    /// The pull is an enforcement point: every assignment is re-checked against the rules in force now, and one
    /// they no longer allow is refused (its attempt ends, its job requeues without using a retry) instead of handed
    /// out. A rule change committed after this read ends the attempt itself, and the agent's start is then refused.
    package func assignments(host: Int64) async throws -> [Assignment] {
        try await rawAssignments(host: host).map { try $0.decoded() }
    }

    /// ``assignments(host:)`` with each job's spec as stored (JSON text): the pull hands it on without decoding and
    /// encoding it again (``RawAssignment/listJSON(_:)``).
    package func rawAssignments(host: Int64) async throws -> [RawAssignment] {
        try await client.withConnection { connection in
            let rows = try await run(AssignmentsStatement.self, Self.assignmentsQuery(host: host), on: connection)
            // Most wake-ups of a long poll find nothing: the rules are only read when there is something to check.
            guard let generation = try rows.first?.makeRandomAccess()[15].decode(Int64.self) else { return [] }
            let context = try await policyContext(on: connection, knownGeneration: generation)
            let decoder = WireJSON.sharedDecoder
            var assignments: [RawAssignment] = []
            var refused: [(attempt: Int64, reason: String)] = []
            let now = Date()
            // Every row is of the same host: its facts and GPUs are decoded once.
            var hostFacts: HostFacts?
            var gpus: [GPU] = []
            for row in rows {
                let (attempt, job, specText, indices, lease, gpusText) = try row.decode((Int64, Int64, String, [Int32], Date, String).self)
                let columns = row.makeRandomAccess()
                var jobFacts = JobPolicyRow(
                    id: job, projectID: try columns[6].decode(Int64.self), partnerID: try columns[7].decode(Int64.self),
                    kind: JobKind(rawValue: try columns[8].decode(String.self)) ?? .training, inputs: try columns[9].decode([String].self),
                    maxRuntimeSeconds: try columns[10].decode(Int64.self)
                ).facts(context)
                jobFacts.network = try columns[17].decode(Bool.self)
                if hostFacts == nil {
                    let region = try columns[13].decode(String.self)
                    let partner = try columns[12].decode(Int64.self)
                    hostFacts = HostFacts(
                        id: host, name: try columns[11].decode(String.self), partner: context.partnerNames[partner] ?? "#\(partner)", region: region,
                        jurisdiction: context.regionJurisdiction[region] ?? "?",
                        labels: try decoder.decode([String: String].self, from: Data(try columns[14].decode(String.self).utf8)),
                        runner: RunnerKind(rawValue: try columns[16].decode(String.self)) ?? .process)
                    gpus = try gpuCache.gpus(host: host, json: gpusText)
                }
                guard let hostFacts else { continue }
                let failures = context.snapshot.evaluate(jobFacts, on: hostFacts, at: now).failures
                if !failures.isEmpty {
                    refused.append((attempt, "claim refused: " + failures.map(\.label).joined(separator: ", ")))
                    continue
                }
                let assigned = indices.map(Int.init)
                let uuids = assigned.compactMap { index in gpus.first { $0.index == index }?.uuid }
                assignments.append(
                    RawAssignment(attempt: attempt, jobId: job, specJSON: specText, gpuIndices: assigned, gpuUuids: uuids, leaseExpiresAt: lease))
            }
            if !refused.isEmpty {
                logger.warning("assignments refused at claim", metadata: ["host": "\(host)", "count": "\(refused.count)"])
                try await transaction { try await stopAttempts(refused, event: "claim-refused", on: $0) }
            }
            return assignments
        }
    }

    enum AssignmentsStatement: HotStatement { static let sql = Store.assignmentsQuery(host: 0).sql }

    package static func assignmentsQuery(host: Int64) -> PostgresQuery {
        """
        select a.id, a.job_id, j.spec::text, a.gpu_indices, a.lease_expires_at, h.gpus::text,
               j.project_id, j.partner_id, j.kind, j.inputs, j.max_runtime_seconds,
               h.name, h.partner_id, h.region, h.labels::text, (select generation from policy_state), h.runner,
               coalesce((j.spec->>'network')::boolean, false)
        from hosts h
        -- `offset 0` keeps each subquery as written, so the plan cannot depend on statistics that a burst of
        -- placements made stale: the host's assigned attempts from `attempts_active`, then each job by its key.
        cross join lateral (
            select id, job_id, gpu_indices, lease_expires_at from attempts where host_id = h.id and state = 'assigned' offset 0
        ) a
        cross join lateral (select * from jobs where id = a.job_id offset 0) j
        where h.id = \(host) and j.current_attempt = a.id and j.state = 'assigned'
        order by a.id
        """
    }

    /// The agent started the process: attempt and job become `running`. Idempotent. A report of one start (see
    /// ``report(host:_:)``): starts that arrive together are written together (``Batcher``).
    package func start(attempt: Int64, host: Int64) async throws -> AttemptAck {
        try Self.ack(try await report(host: host, AttemptReports(starts: [attempt])).starts[0])
    }

    /// An item's ack, or ``StoreError/Code/notFound`` when the host has no such attempt.
    static func ack(_ result: AttemptReportResult) throws -> AttemptAck {
        guard let ack = result.ack else { throw StoreError(.notFound, "no attempt \(result.attempt) on this host") }
        return ack
    }

    /// An attempt as an agent names it: its id and the agent's host.
    struct AttemptKey: Hashable, Sendable {
        var attempt: Int64
        var host: Int64
    }

    enum StartStatement: HotStatement { static let sql = Store.startQuery(attempts: [], hosts: [], leaseSeconds: 0).sql }

    /// Starts a batch: the job of each request that started (its attempt was assigned to that host and is still its
    /// job's current one), `nil` for the others.
    static func start(
        _ batch: [AttemptKey], client: PostgresClient, leaseSeconds: Double, logger: Logger
    ) async throws -> [Int64?] {
        let query = startQuery(attempts: batch.map(\.attempt), hosts: batch.map(\.host), leaseSeconds: leaseSeconds)
        let started = try await retryingDeadlocks(logger: logger) {
            // By attempt and host: the same attempt may be asked for by its host and by another one.
            var started: [AttemptKey: Int64] = [:]
            for try await row in try await client.execute(Prepared<StartStatement>(query), logger: logger) {
                let (attempt, host, job) = try row.decode((Int64, Int64, Int64).self)
                started[AttemptKey(attempt: attempt, host: host)] = job
            }
            return started
        }
        return batch.map { started[$0] }
    }

    package static func startQuery(attempts: [Int64], hosts: [Int64], leaseSeconds: Double) -> PostgresQuery {
        """
        with r as (
            select * from unnest(\(attempts)::bigint[], \(hosts)::bigint[]) as r(attempt, host)
        ), a as (
            update attempts a set state = 'running', started_at = now(),
                lease_expires_at = now() + make_interval(secs => \(leaseSeconds))
            from r, jobs j
            where a.id = r.attempt and a.host_id = r.host and a.state = 'assigned'
              and j.id = a.job_id and j.current_attempt = a.id and j.state = 'assigned' and not j.cancel_requested
            returning a.id, a.job_id, a.host_id
        ), j as (
            update jobs set state = 'running', started_at = coalesce(started_at, now())
            from a where jobs.id = a.job_id returning jobs.id
        ), e as (
            insert into job_events (job_id, attempt_id, kind, message)
            select a.job_id, a.id, 'running', 'started by the agent' from a
        ), starting as (
            select job_id, host_id, id as attempt from a
        ), audited as (
            \(unescaped: Self.auditRows(kind: "'started'", actor: "'agent'", body: "json_build_object('attempt', x.attempt)", from: "starting"))
        )
        select a.id, a.host_id, a.job_id, (select count(*) from audited), (select count(*) from j) from a
        """
    }

    /// Whether the attempt is still the one to run, and its state.
    func ack(attempt: Int64, host: Int64, on connection: PostgresConnection) async throws -> AttemptAck {
        let rows = try await connection.query(
            """
            select a.state, (j.current_attempt = a.id and not j.cancel_requested and a.state in ('assigned', 'running'))
            from attempts a join jobs j on j.id = a.job_id
            where a.id = \(attempt) and a.host_id = \(host)
            """, logger: logger
        ).decode((String, Bool).self).collect()
        guard let (state, current) = rows.first else {
            throw StoreError(.notFound, "no attempt \(attempt) on this host")
        }
        return AttemptAck(current: current, state: AttemptState(rawValue: state) ?? .lost)
    }

    /// Appends one chunk of output. A chunk already stored (same attempt and agent seq) is not stored twice; output
    /// past the job's log bound is dropped and the job marked truncated. One statement in the common case.
    package func appendLog(attempt: Int64, host: Int64, _ chunk: LogAppend) async throws -> AttemptAck {
        let bytes = Int64(chunk.data.utf8.count)
        let stored = try await client.query(
            """
            with j as (
                update jobs j set log_seq = j.log_seq + 1, log_bytes = j.log_bytes + \(bytes)
                from attempts a
                where a.id = \(attempt) and a.host_id = \(host) and j.id = a.job_id and j.current_attempt = a.id
                  and a.state in ('assigned', 'running') and j.log_bytes + \(bytes) <= \(configuration.logLimitBytes)
                  and not exists (select 1 from job_logs l where l.attempt_id = \(attempt) and l.agent_seq = \(chunk.seq))
                returning j.id, j.log_seq, j.cancel_requested, a.state
            ), l as (
                insert into job_logs (job_id, seq, attempt_id, agent_seq, stream, data)
                select id, log_seq, \(attempt), \(chunk.seq), \(chunk.stream.rawValue), \(chunk.data) from j
            )
            select j.cancel_requested, j.state, j.id from j
            """, logger: logger
        ).decode((Bool, String, Int64).self).collect()
        if let (cancelRequested, state, job) = stored.first {
            await notices.send([.init(Channel.job, String(job))])
            return AttemptAck(current: !cancelRequested, state: AttemptState(rawValue: state) ?? .running)
        }
        // Not stored: a repeat, a fenced-off attempt, or the bound was reached.
        return try await transaction { connection in
            try await connection.query(
                """
                update jobs j set log_truncated = true from attempts a
                where a.id = \(attempt) and a.host_id = \(host) and j.id = a.job_id and j.current_attempt = a.id
                  and not j.log_truncated and j.log_bytes + \(bytes) > \(configuration.logLimitBytes)
                """, logger: logger)
            return try await ack(attempt: attempt, host: host, on: connection)
        }
    }

    /// The agent reports the end of an attempt. Idempotent: a second report of an ended attempt changes nothing.
    /// A report for an attempt that is no longer the job's current one (fenced off) ends that attempt only. A report of
    /// one end (see ``report(host:_:)``).
    package func finish(attempt: Int64, host: Int64, _ report: FinishRequest) async throws -> AttemptAck {
        try Self.ack(try await self.report(host: host, AttemptReports(ends: [AttemptEnd(attempt: attempt, report)])).ends[0])
    }

    /// Several starts and ends of one host's agent (``AttemptReports``): the starts first, all in one batch, then the
    /// ends, all in one batch, each with the other agents' reports waiting then. An attempt the host does not have is
    /// answered `not_found`; its job's listeners (and, after an end, the scheduler) are notified once all committed.
    package func report(host: Int64, _ reports: AttemptReports) async throws -> AttemptReportResults {
        var notices: [NoticeSender.Notice] = []
        var startResults: [AttemptReportResult] = []
        if !reports.starts.isEmpty {
            let started = try await starts.submit(reports.starts.map { AttemptKey(attempt: $0, host: host) })
            for (attempt, job) in zip(reports.starts, started) {
                if let job {
                    notices.append(.init(Channel.job, String(job)))
                    startResults.append(AttemptReportResult(attempt: attempt, ack: AttemptAck(current: true, state: .running)))
                } else {
                    // Not started here (a repeat, a fenced-off attempt, another host's): say what it is.
                    let known = try await Self.unlessNotFound {
                        try await client.withConnection { try await self.ack(attempt: attempt, host: host, on: $0) }
                    }
                    startResults.append(
                        known.map { AttemptReportResult(attempt: attempt, ack: $0) } ?? AttemptReportResult(attempt: attempt, error: "not_found"))
                }
            }
        }
        var endResults: [AttemptReportResult] = []
        if !reports.ends.isEmpty {
            let requests = try reports.ends.map {
                EndRequest(key: AttemptKey(attempt: $0.attempt, host: host), report: $0.report, usage: try Self.usageJSON($0.usage))
            }
            var ended = false
            for (request, result) in zip(requests, try await ends.submit(requests)) {
                var outcome: (ack: AttemptAck, job: Int64?)?
                switch result {
                case .ended(let ack, let job): outcome = (ack, job)
                case .unchanged(let ack): outcome = (ack, nil)
                case .notFound: outcome = nil
                case .alone:
                    outcome = try await Self.unlessNotFound {
                        try await finishAlone(attempt: request.key.attempt, host: host, request.report, usage: request.usage)
                    }
                }
                guard let (ack, job) = outcome else {
                    endResults.append(AttemptReportResult(attempt: request.key.attempt, error: "not_found"))
                    continue
                }
                if let job {
                    notices.append(.init(Channel.job, String(job)))
                    ended = true
                }
                endResults.append(AttemptReportResult(attempt: request.key.attempt, ack: ack))
            }
            if ended { notices.append(.init(Channel.scheduler)) }
        }
        await self.notices.send(notices)
        return AttemptReportResults(starts: startResults, ends: endResults)
    }

    /// `body`'s value, or `nil` when it throws ``StoreError/Code/notFound``.
    static func unlessNotFound<T>(_ body: () async throws -> T) async throws -> T? {
        do {
            return try await body()
        } catch let error as StoreError where error.code == .notFound {
            return nil
        }
    }

    /// An end report that registers outputs (it takes the rules' lock first), in a transaction of its own.
    func finishAlone(attempt: Int64, host: Int64, _ report: FinishRequest, usage: String?) async throws -> (AttemptAck, Int64?) {
        try await transaction { connection -> (AttemptAck, Int64?) in
            // A job that succeeds with declared outputs registers datasets, which takes the rules' lock: take it
            // before the job's row, in the order every rule change takes them (rules, then rows).
            if report.outcome == .exited, report.exitCode == 0 {
                _ = try await run(FinishRulesLock.self, Self.finishRulesLock(attempt: attempt), on: connection)
            }
            // Then the batch's own read and write, for a batch of one.
            let key = AttemptKey(attempt: attempt, host: host)
            guard let row = try await Self.endRows([key], on: connection, logger: logger)[key] else {
                throw StoreError(.notFound, "no attempt \(attempt) on this host")
            }
            guard let state = AttemptState(rawValue: row.attemptState), !state.isTerminal else {
                return (AttemptAck(current: false, state: AttemptState(rawValue: row.attemptState) ?? .lost), nil)
            }
            let end = Self.ending(
                report, jobState: row.jobState, isCurrent: row.isCurrent, attempts: row.attempts, retries: row.retries,
                cancelRequested: row.cancelRequested)
            var writes = EndWrites()
            writes.append(EndRequest(key: key, report: report, usage: usage), job: row.job, end: end)
            try await Self.writeEnds(writes, on: connection, logger: logger)
            if end.next == .succeeded, row.hasOutputs { try await registerOutputs(job: row.job, on: connection) }
            return (AttemptAck(current: false, state: end.ended), row.job)
        }
    }

    /// What an end report does to its attempt and job: the attempt's final state, the reason, the event message, and
    /// the job's next state (`nil` when the attempt is no longer the job's current one).
    static func ending(
        _ report: FinishRequest, jobState: String, isCurrent: Bool, attempts: Int32, retries: Int32, cancelRequested: Bool
    ) -> (ended: AttemptState, reason: String, message: String, next: JobState?) {
        let event: JobEvent
        let ended: AttemptState
        var reason: String
        switch report.outcome {
        case .exited:
            let code = report.exitCode ?? -1
            event = .exited(code: code)
            ended = code == 0 ? .succeeded : .failed
            reason = code == 0 ? "exit 0" : "exit \(code)"
        case .error:
            event = .errored
            ended = .failed
            reason = "agent error: \(report.message ?? "unknown")"
        case .oomKilled:
            // The program outgrew the memory it asked for: like a non-zero exit, this fails the job at once
            // (retries cover the infrastructure, not the program; the same limit would end the same way).
            event = .exited(code: report.exitCode ?? 137)
            ended = .failed
            reason = "OOM_KILLED: \(report.message ?? "memory limit exceeded")"
        case .stopped:
            event = cancelRequested ? .cancelled : .attemptLost
            ended = cancelRequested ? .cancelled : .lost
            reason = cancelRequested ? "cancelled" : "stopped by the agent"
        }
        if cancelRequested, report.outcome != .exited || report.exitCode != 0 {
            reason = "cancelled"
        }
        var message = reason
        var next: JobState?
        if isCurrent, let current = JobState(rawValue: jobState) {
            let transition = JobTransition(state: current, attemptsUsed: Int(attempts), retries: Int(retries))
            next = transition.next(on: cancelRequested && event != .exited(code: 0) ? .cancelled : event)
            if next == .queued { message += "; requeued (\(Int(retries) - Int(attempts) + 1) retries left)" }
        }
        return (ended, reason, message, next)
    }
}

extension Store {
    enum FinishRulesLock: HotStatement { static let sql = Store.finishRulesLock(attempt: 0).sql }
    static func finishRulesLock(attempt: Int64) -> PostgresQuery {
        """
        select 1 from policy_state
        where exists (select 1 from attempts a join jobs j on j.id = a.job_id
                      where a.id = \(attempt) and coalesce(jsonb_array_length(j.spec->'outputs'), 0) > 0)
        for update
        """
    }
}

extension Store {
    /// A finish report's usage record as JSON text, or `nil`.
    ///
    /// - Throws: ``StoreError`` `.invalid` naming the field of a malformed record.
    static func usageJSON(_ usage: AttemptUsage?) throws -> String? {
        guard let usage else { return nil }
        if let problem = usage.problem { throw StoreError(.invalid, problem.message, field: problem.field) }
        return String(decoding: try WireJSON.shared.encode(usage), as: UTF8.self)
    }
}

/// An assignment with its job's spec as stored: JSON text that the store wrote from a ``JobSpec`` with
/// ``WireJSON``'s encoder (PostgreSQL's `jsonb` keeps its keys and values, not its spacing).
package struct RawAssignment: Sendable {
    package var attempt: Int64
    package var jobId: Int64
    package var specJSON: String
    package var gpuIndices: [Int]
    package var gpuUuids: [String]
    package var leaseExpiresAt: Date

    package func decoded() throws -> Assignment {
        Assignment(
            attempt: attempt, jobId: jobId, spec: try WireJSON.sharedDecoder.decode(JobSpec.self, from: Data(specJSON.utf8)),
            gpuIndices: gpuIndices, gpuUuids: gpuUuids, leaseExpiresAt: leaseExpiresAt)
    }

    /// The JSON of an ``AssignmentList`` of these, as ``WireJSON`` would encode it (snake_case keys, sorted), with each
    /// spec spliced in as stored. A test decodes it back into the typed list.
    package static func listJSON(_ assignments: [RawAssignment]) throws -> String {
        var out = #"{"assignments":["#
        for (index, assignment) in assignments.enumerated() {
            if index > 0 { out += "," }
            let uuids = String(decoding: try WireJSON.shared.encode(assignment.gpuUuids), as: UTF8.self)
            out += #"{"attempt":"# + String(assignment.attempt)
            out += #","gpu_indices":["# + assignment.gpuIndices.map(String.init).joined(separator: ",") + "]"
            out += #","gpu_uuids":"# + uuids
            out += #","job_id":"# + String(assignment.jobId)
            out += #","lease_expires_at":""# + WireJSON.format(assignment.leaseExpiresAt) + #"""#
            out += #","spec":"# + assignment.specJSON + "}"
        }
        return out + "]}"
    }
}
