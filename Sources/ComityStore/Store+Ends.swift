import ComityAPI
import ComityCore
import Logging
import PostgresNIO

/// End reports written in batches: the reports that arrive together are read, locked and written by one transaction
/// of two statements, whatever their number (see ``Batcher``).
extension Store {
    struct EndRequest: Sendable {
        var key: AttemptKey
        var report: FinishRequest
        var usage: String?
    }

    enum EndResult: Sendable {
        /// Written; the job's id (to notify).
        case ended(AttemptAck, job: Int64)
        /// The attempt had already ended: nothing written.
        case unchanged(AttemptAck)
        case notFound
        /// Registers outputs: written on its own (``finishAlone(attempt:host:_:usage:)``), after the rules' lock.
        case alone
    }

    struct EndRow {
        var attemptState: String
        var job: Int64
        var jobState: String
        var isCurrent: Bool
        var attempts: Int32
        var retries: Int32
        var cancelRequested: Bool
        var hasOutputs: Bool
    }

    enum EndRead: HotStatement { static let sql = Store.endReadQuery(attempts: [], hosts: []).sql }
    enum EndWrite: HotStatement { static let sql = Store.endWriteQuery(EndWrites()).sql }

    /// Runs a batch of end reports (in request order) in one transaction.
    static func end(_ batch: [EndRequest], client: PostgresClient, logger: Logger) async throws -> [EndResult] {
        try await retryingDeadlocks(logger: logger) {
            try await client.withTransaction(logger: logger) { connection in
                let rows = try await endRows(batch.map(\.key), on: connection, logger: logger)
                var results: [EndResult] = []
                var writes = EndWrites()
                // A report repeated within the batch (an agent's retry) is answered like a repeat after it.
                var endedHere: [Int64: AttemptState] = [:]
                for request in batch {
                    guard let row = rows[request.key] else {
                        results.append(.notFound)
                        continue
                    }
                    if let ended = endedHere[request.key.attempt] {
                        results.append(.unchanged(AttemptAck(current: false, state: ended)))
                        continue
                    }
                    guard let state = AttemptState(rawValue: row.attemptState), !state.isTerminal else {
                        results.append(.unchanged(AttemptAck(current: false, state: AttemptState(rawValue: row.attemptState) ?? .lost)))
                        continue
                    }
                    let report = request.report
                    if row.hasOutputs, report.outcome == .exited, report.exitCode == 0 {
                        results.append(.alone)
                        continue
                    }
                    let end = ending(
                        report, jobState: row.jobState, isCurrent: row.isCurrent, attempts: row.attempts, retries: row.retries,
                        cancelRequested: row.cancelRequested)
                    writes.append(request, job: row.job, end: end)
                    endedHere[request.key.attempt] = end.ended
                    results.append(.ended(AttemptAck(current: false, state: end.ended), job: row.job))
                }
                try await writeEnds(writes, on: connection, logger: logger)
                return results
            }
        }
    }

    /// The attempts named by `keys` with their jobs, locked (``endReadQuery(attempts:hosts:)``).
    static func endRows(_ keys: [AttemptKey], on connection: PostgresConnection, logger: Logger) async throws -> [AttemptKey: EndRow] {
        let query = endReadQuery(attempts: keys.map(\.attempt), hosts: keys.map(\.host))
        var rows: [AttemptKey: EndRow] = [:]
        for try await row in try await connection.execute(Prepared<EndRead>(query), logger: logger) {
            let (attempt, host, attemptState, job, jobState, isCurrent, attempts, retries, cancelRequested, hasOutputs) = try row.decode(
                (Int64, Int64, String, Int64, String, Bool, Int32, Int32, Bool, Bool).self)
            rows[AttemptKey(attempt: attempt, host: host)] = EndRow(
                attemptState: attemptState, job: job, jobState: jobState, isCurrent: isCurrent, attempts: attempts, retries: retries,
                cancelRequested: cancelRequested, hasOutputs: hasOutputs)
        }
        return rows
    }

    /// Writes `writes` (nothing when empty) with ``endWriteQuery(_:)``.
    static func writeEnds(_ writes: EndWrites, on connection: PostgresConnection, logger: Logger) async throws {
        guard !writes.attempts.isEmpty else { return }
        for try await _ in try await connection.execute(Prepared<EndWrite>(endWriteQuery(writes)), logger: logger) {}
    }

    /// The reported attempts with their jobs, locked in attempt order.
    static func endReadQuery(attempts: [Int64], hosts: [Int64]) -> PostgresQuery {
        """
        select a.id, a.host_id, a.state, a.job_id, j.state, j.current_attempt = a.id, j.attempts - j.policy_stops, j.retries,
               j.cancel_requested, coalesce(jsonb_array_length(j.spec->'outputs'), 0) > 0
        from unnest(\(attempts)::bigint[], \(hosts)::bigint[]) as r(attempt, host)
        join attempts a on a.id = r.attempt and a.host_id = r.host
        join jobs j on j.id = a.job_id
        order by a.id
        for no key update of a, j
        """
    }

    /// The columns of a batch's writes (PostgreSQL arrays hold no Swift optionals: "" and `has_code` stand for none).
    struct EndWrites: Sendable {
        var attempts: [Int64] = []
        var hosts: [Int64] = []
        var jobs: [Int64] = []
        var ended: [String] = []
        var codes: [Int32] = []
        var hasCode: [Bool] = []
        var reasons: [String] = []
        var usages: [String] = []
        var next: [String] = []
        var terminal: [Bool] = []
        var messages: [String] = []

        mutating func append(_ request: EndRequest, job: Int64, end: (ended: AttemptState, reason: String, message: String, next: JobState?)) {
            attempts.append(request.key.attempt)
            hosts.append(request.key.host)
            jobs.append(job)
            ended.append(end.ended.rawValue)
            codes.append(request.report.exitCode ?? 0)
            hasCode.append(request.report.exitCode != nil)
            reasons.append(end.reason)
            usages.append(request.usage ?? "")
            next.append(end.next?.rawValue ?? "")
            terminal.append(end.next?.isTerminal ?? false)
            messages.append(end.message)
        }
    }

    /// Every write of the batch in one statement: the attempts, the jobs whose current attempt ended, the events and
    /// the ledger entries.
    static func endWriteQuery(_ w: EndWrites) -> PostgresQuery {
        """
        with r as (
            select * from unnest(\(w.attempts)::bigint[], \(w.hosts)::bigint[], \(w.jobs)::bigint[], \(w.ended)::text[], \(w.codes)::int4[],
                                 \(w.hasCode)::boolean[], \(w.reasons)::text[], \(w.usages)::text[], \(w.next)::text[], \(w.terminal)::boolean[],
                                 \(w.messages)::text[])
                as r(attempt, host, job, ended, code, has_code, reason, usage, next, terminal, message)
        ), a as (
            update attempts set state = r.ended, ended_at = now(), exit_code = case when r.has_code then r.code end, reason = r.reason,
                usage = nullif(r.usage, '')::jsonb
            from r where attempts.id = r.attempt
        ), j as (
            update jobs set state = r.next, exit_code = case when r.has_code then r.code end, reason = r.reason,
                finished_at = case when r.terminal then now() end, cancel_requested = false
            from r where jobs.id = r.job and r.next <> ''
        ), e as (
            insert into job_events (job_id, attempt_id, kind, message) select r.job, r.attempt, r.ended, r.message from r
        ), ending as (
            select r.job as job_id, r.host as host_id, r.attempt, r.ended as outcome, case when r.has_code then r.code end as exit_code,
                   r.reason, nullif(r.next, '') as job_state
            from r
        ), audited as (
            \(unescaped: Self.auditRows(
                kind: "'ended'", actor: "'agent'",
                body: "json_build_object('attempt', x.attempt, 'outcome', x.outcome, 'exit_code', x.exit_code, 'reason', x.reason, 'job_state', x.job_state)",
                from: "ending"))
        )
        select (select count(*) from audited)
        """
    }
}
