import ComityAPI
import ComityCore
import Foundation
import Logging
import PostgresNIO

/// Submitting, reading and cancelling jobs.
extension Store {
    static let jobColumns = """
        j.id, j.name, pr.name, pa.name, j.kind, j.state, j.priority, j.spec::text, p.name, j.submitted_at, j.started_at,
        j.finished_at, j.current_attempt, j.attempts, h.name, h.region, a.gpu_indices, j.exit_code, j.reason, j.cancel_requested,
        a.usage::text
        """
    static let jobJoins = """
        from jobs j
        join projects pr on pr.id = j.project_id
        join partners pa on pa.id = j.partner_id
        join principals p on p.id = j.submitted_by
        left join attempts a on a.id = j.current_attempt
        left join hosts h on h.id = a.host_id
        """

    static func jobView(_ row: PostgresRow) throws -> JobView {
        let r = row.makeRandomAccess()
        let specText = try r[7].decode(String.self)
        let spec = try WireJSON.sharedDecoder.decode(JobSpec.self, from: Data(specText.utf8))
        return JobView(
            id: try r[0].decode(Int64.self), name: try r[1].decode(String.self), project: try r[2].decode(String.self),
            partner: try r[3].decode(String.self), kind: JobKind(rawValue: try r[4].decode(String.self)) ?? .training,
            state: JobState(rawValue: try r[5].decode(String.self)) ?? .queued, priority: Int(try r[6].decode(Int32.self)),
            spec: spec, submittedBy: try r[8].decode(String.self), submittedAt: try r[9].decode(Date.self),
            startedAt: try r[10].decode(Date?.self), finishedAt: try r[11].decode(Date?.self),
            attempt: try r[12].decode(Int64?.self), attempts: Int(try r[13].decode(Int32.self)),
            host: try r[14].decode(String?.self), region: try r[15].decode(String?.self),
            gpuIndices: try r[16].decode([Int32]?.self)?.map(Int.init), exitCode: try r[17].decode(Int32?.self),
            reason: try r[18].decode(String?.self), cancelRequested: try r[19].decode(Bool.self),
            usage: try r[20].decode(String?.self).map { try WireJSON.sharedDecoder.decode(AttemptUsage.self, from: Data($0.utf8)) }
        )
    }

    /// Stores validated jobs of one project in one transaction and wakes the scheduler.
    ///
    /// - Parameter specs: all of the same project (an array job expands into many specs).
    /// - Throws: ``StoreError`` `.forbidden` when `principal` may not submit to the project.
    package func submit(_ specs: [JobSpec], by principal: Principal) async throws -> [Int64] {
        guard let first = specs.first else { return [] }
        let ids = try await projectIDs(first.project, field: "project")
        switch principal.role {
        case .admin: break
        case .researcher where principal.projectID == ids.project: break
        case .partnerAdmin where principal.partnerID == ids.partner: break
        default:
            throw StoreError(.forbidden, "\(principal.role.rawValue) \(principal.name) may not submit to project \(first.project)", field: "project")
        }
        let encoder = WireJSON.shared
        let documents = try specs.map { String(decoding: try encoder.encode($0), as: UTF8.self) }
        let submitted = try await transaction { connection in
            // The rules first: a job they can never admit is rejected with every reason, and each admitted job
            // carries the jurisdictions its data may reach (checked by the database when it is placed).
            let permitted = try await admit(specs, project: ids.project, partner: ids.partner, on: connection).map { $0 ?? "" }
            let rows = try await connection.query(
                """
                with input as (
                    select * from unnest(\(documents)::text[], \(permitted)::text[]) with ordinality as i(doc, permitted, n)
                ), inserted as (
                    insert into jobs (project_id, partner_id, submitted_by, name, kind, spec, priority, cpu_millis, memory_bytes,
                                      gpus, gpu_model, gpu_memory_bytes, retries, inputs, max_runtime_seconds, permitted_jurisdictions, preemptible)
                    select \(ids.project), \(ids.partner), \(principal.id), d->>'name', d->>'kind', d, (d->>'priority')::int,
                           (d->'resources'->>'cpu_millis')::int, (d->'resources'->>'memory_bytes')::bigint,
                           (d->'resources'->>'gpus')::int, d->'resources'->>'gpu_model',
                           (d->'resources'->>'gpu_memory_bytes')::bigint, (d->>'retries')::int,
                           array(select jsonb_array_elements_text(d->'inputs')), (d->>'max_runtime_seconds')::bigint, nullif(permitted, '')::text[],
                           coalesce((d->>'preemptible')::boolean, d->>'kind' <> 'inference')
                    from (select doc::jsonb as d, permitted, n from input order by n) s
                    returning id, name, kind, inputs, permitted_jurisdictions, priority
                ), events as (
                    insert into job_events (job_id, kind, message)
                    select id, 'submitted', 'submitted by ' || \(principal.name) from inserted
                ), who as (
                    select \(principal.name)::text as actor, pr.name as project, pa.name as partner
                    from projects pr join partners pa on pa.id = pr.partner_id where pr.id = \(ids.project)
                ), audited as (
                    -- The new jobs are not visible to other parts of this statement through the table: the entries are
                    -- built from what the insert returned.
                    \(unescaped: Self.auditSubmitted(
                        body: "json_build_object('name', x.name, 'project', w.project, 'kind', x.kind, 'priority', x.priority, 'permitted', x.permitted_jurisdictions)"))
                )
                select id from inserted order by id
                """, logger: logger)
            return try await rows.decode(Int64.self).collect()
        }
        await notices.send([.init(Channel.scheduler)])
        return submitted
    }

    /// Jobs visible in `scope`, newest first.
    package func jobs(scope: JobScope, state: JobState?, project: String?, limit: Int) async throws -> [JobView] {
        let (partner, projectID) = scope.filters
        let rows = try await client.query(
            """
            select \(unescaped: Self.jobColumns) \(unescaped: Self.jobJoins)
            where (\(partner)::bigint is null or j.partner_id = \(partner))
              and (\(projectID)::bigint is null or j.project_id = \(projectID))
              and (\(state?.rawValue)::text is null or j.state = \(state?.rawValue))
              and (\(project)::text is null or pr.name = \(project))
            order by j.id desc limit \(Int64(limit))
            """, logger: logger)
        var jobs: [JobView] = []
        for try await row in rows { jobs.append(try Self.jobView(row)) }
        return jobs
    }

    /// One job, or `nil` when it does not exist or is outside `scope` (the two are indistinguishable on purpose).
    package func job(_ id: Int64, scope: JobScope) async throws -> JobView? {
        let (partner, projectID) = scope.filters
        let rows = try await client.query(
            """
            select \(unescaped: Self.jobColumns) \(unescaped: Self.jobJoins)
            where j.id = \(id)
              and (\(partner)::bigint is null or j.partner_id = \(partner))
              and (\(projectID)::bigint is null or j.project_id = \(projectID))
            """, logger: logger)
        for try await row in rows { return try Self.jobView(row) }
        return nil
    }

    package func events(job id: Int64) async throws -> [JobEventView] {
        try await client.query(
            "select id, at, kind, attempt_id, message from job_events where job_id = \(id) order by id", logger: logger
        ).decode((Int64, Date, String, Int64?, String).self).collect().map {
            JobEventView(id: $0.0, at: $0.1, kind: $0.2, attempt: $0.3, message: $0.4)
        }
    }

    /// Cancels a job: at once when it is queued or assigned but not started; a running job is marked and its agent
    /// stops it (SIGTERM to the process group, then SIGKILL) and reports, which ends the job as cancelled.
    ///
    /// - Returns: the job after the change, or `nil` when it is not visible in `scope`.
    package func cancel(job id: Int64, scope: JobScope, by principal: Principal) async throws -> JobView? {
        guard try await job(id, scope: scope) != nil else { return nil }
        try await transaction { connection in
            let reason = "cancelled by \(principal.name)"
            let rows = try await connection.query(
                """
                with j as (
                    select id, state, current_attempt from jobs where id = \(id) for no key update
                ), ended as (
                    update jobs set state = 'cancelled', finished_at = now(), reason = \(reason)
                    where id = \(id) and state in ('queued', 'assigned')
                    returning current_attempt
                ), attempt as (
                    update attempts set state = 'cancelled', ended_at = now(), reason = \(reason)
                    where id = (select current_attempt from ended) and state = 'assigned'
                ), marked as (
                    update jobs set cancel_requested = true, reason = \(reason)
                    where id = \(id) and state = 'running' and not cancel_requested
                    returning id
                )
                select j.state, (select count(*) from ended), (select count(*) from marked), h.id
                from j left join attempts a on a.id = j.current_attempt left join hosts h on h.id = a.host_id
                """, logger: logger)
            guard let (before, ended, marked, hostID) = try await rows.decode((String, Int64, Int64, Int64?).self).collect().first
            else { return }
            if ended + marked > 0 {
                try await connection.query(
                    """
                    insert into job_events (job_id, kind, message)
                    values (\(id), \(ended > 0 ? "cancelled" : "cancel-requested"), \(reason))
                    """, logger: logger)
                try await connection.query("select pg_notify(\(Channel.job), \(String(id)))", logger: logger)
                if let hostID { try await connection.query("select pg_notify(\(Channel.assign), \(String(hostID)))", logger: logger) }
                if ended > 0, before == "assigned" { try await connection.query("select pg_notify(\(Channel.scheduler), '')", logger: logger) }
                try await connection.query(
                    """
                    with cancelled as (
                        select \(id)::bigint as job_id, \(ended > 0 ? "cancelled" : "cancel-requested")::text as kind, \(principal.name)::text as actor,
                               \(before)::text as state_before
                    )
                    \(unescaped: Self.auditJobs(kind: "x.kind", actor: "x.actor", body: "json_build_object('state_before', x.state_before)", from: "cancelled"))
                    """, logger: logger)
            }
        }
        return try await job(id, scope: scope)
    }

    /// A page of the job's log after `seq`.
    package func logs(job id: Int64, after seq: Int64, limit: Int = 1_000) async throws -> (chunks: [LogChunk], truncated: Bool) {
        let chunks = try await client.query(
            """
            select seq, attempt_id, stream, data, at from job_logs
            where job_id = \(id) and seq > \(seq) order by seq limit \(Int64(limit))
            """, logger: logger
        ).decode((Int64, Int64, String, String, Date).self).collect().map {
            LogChunk(seq: $0.0, attempt: $0.1, stream: LogStream(rawValue: $0.2) ?? .stdout, data: $0.3, at: $0.4)
        }
        let truncated = try await client.query("select log_truncated from jobs where id = \(id)", logger: logger)
            .decode(Bool.self).collect().first ?? false
        return (chunks, truncated)
    }
}
