import ComityAPI
import ComityCore
import Foundation
import Logging
import PostgresNIO
import Synchronization

/// The rules and the entities they are evaluated against, as of one `policy_state.generation`.
package struct PolicyContext: Sendable {
    package var generation: Int64
    package var snapshot: PolicySnapshot
    package var partnerNames: [Int64: String]
    package var projectNames: [Int64: String]
    package var regionJurisdiction: [String: String]
    /// Each stored version's document as applied (for history and diffs).
    package var documents: [PolicyKey: [Int: JSONValue]]
    /// For deciding only: each project the rules never name maps to the first project with the same partner, purpose
    /// and commercial flag (the rules cannot tell them apart), so a pass evaluates one class for all of them.
    var decisionProject: [String: String] = [:]

    package func active(at time: Date = Date()) -> ActivePolicies { snapshot.active(at: time) }
}

/// The last loaded ``PolicyContext``; reloaded only when the generation moves (a rule or an entity changed).
final class PolicyCache: Sendable {
    let current = Mutex<PolicyContext?>(nil)
}

/// A job's facts as the rules see them, read from its row.
struct JobPolicyRow: Sendable {
    var id: Int64
    var projectID: Int64
    var partnerID: Int64
    var kind: JobKind
    var inputs: [String]
    var maxRuntimeSeconds: Int64
    /// The spec's `network: true` (read as ``networkSQL``).
    var network = false

    /// The job's `network` flag out of its spec, `false` when absent (`j` is the jobs table).
    static let networkSQL = "coalesce((j.spec->>'network')::boolean, false)"

    func facts(_ context: PolicyContext) -> JobFacts {
        JobFacts(
            project: context.projectNames[projectID] ?? "#\(projectID)", partner: context.partnerNames[partnerID] ?? "#\(partnerID)",
            kind: kind, inputs: inputs, maxRuntimeSeconds: maxRuntimeSeconds, network: network)
    }
}

extension Store {
    // MARK: Loading the rules

    /// The current rules; reads one row when nothing changed since the last load.
    ///
    /// - Parameter knownGeneration: the generation the caller read in its own query (saves a round trip).
    package func policyContext(on connection: PostgresConnection, knownGeneration: Int64? = nil) async throws -> PolicyContext {
        var generation = knownGeneration ?? -1
        if knownGeneration == nil {
            generation = try await connection.query("select generation from policy_state", logger: logger)
                .decode(Int64.self).collect().first ?? 0
        }
        if let cached = policyCache.current.withLock({ $0 }), cached.generation == generation, Date() < cached.snapshot.presentValidUntil {
            return cached
        }
        let context = try await loadPolicyContext(generation: generation, on: connection)
        policyCache.current.withLock { $0 = context }
        return context
    }

    package func policyContext() async throws -> PolicyContext {
        try await client.withConnection { try await policyContext(on: $0) }
    }

    func loadPolicyContext(generation: Int64, on connection: PostgresConnection) async throws -> PolicyContext {
        var facts = FederationFacts()
        for try await (code, parent) in try await connection.query("select code, parent from jurisdictions", logger: logger).decode((String, String?).self) {
            facts.jurisdictions[code] = .some(parent)
        }
        var partnerNames: [Int64: String] = [:]
        for try await (id, name, commercial) in try await connection.query("select id, name, commercial from partners", logger: logger)
            .decode((Int64, String, Bool).self)
        {
            partnerNames[id] = name
            facts.partners[name] = PartnerFacts(commercial: commercial)
        }
        var projectNames: [Int64: String] = [:]
        var projectKeys: [(name: String, partner: Int64, purpose: String?, commercial: Bool)] = []
        for try await (id, name, partner, purpose, commercial) in try await connection.query(
            "select id, name, partner_id, purpose, commercial from projects order by id", logger: logger
        ).decode((Int64, String, Int64, String?, Bool).self) {
            projectNames[id] = name
            facts.projects[name] = ProjectFacts(partner: partnerNames[partner] ?? "#\(partner)", purpose: purpose, commercial: commercial)
            projectKeys.append((name, partner, purpose, commercial))
        }
        var regions: [String: String] = [:]
        for try await (name, jurisdiction) in try await connection.query("select name, jurisdiction from regions", logger: logger)
            .decode((String, String).self)
        {
            regions[name] = jurisdiction
        }
        var versions: [PolicyVersion] = []
        var documents: [PolicyKey: [Int: JSONValue]] = [:]
        let decoder = JSONDecoder()
        for try await (kind, name, version, text, effective) in try await connection.query(
            "select kind, name, version, document::text, effective_from from policies order by id", logger: logger
        ).decode((String, String, Int32, String, Date).self) {
            let value = try decoder.decode(JSONValue.self, from: Data(text.utf8))
            switch PolicyDocument.parse(value) {
            case .success(let document):
                versions.append(PolicyVersion(document: document, version: Int(version), effectiveFrom: effective))
                documents[document.key, default: [:]][Int(version)] = value
            case .failure(let failure):
                // Cannot happen for documents this code validated; a document it cannot read permits nothing.
                logger.error("stored rule cannot be read; it is ignored (fail closed)", metadata: ["rule": "\(kind)/\(name)@v\(version)", "error": "\(failure)"])
            }
        }
        var context = PolicyContext(
            generation: generation, snapshot: PolicySnapshot(facts: facts, versions: versions), partnerNames: partnerNames,
            projectNames: projectNames, regionJurisdiction: regions, documents: documents)
        // Any project named anywhere in any version (a `projects:` list of a dataset's use, a donor or federation
        // rule) keeps its own class; the others share one per (partner, purpose, commercial).
        var named: Set<String> = []
        func collect(_ value: JSONValue) {
            switch value {
            case .object(let object):
                for (key, child) in object {
                    if key == "projects", case .array(let items) = child {
                        for case .string(let project) in items { named.insert(project) }
                    }
                    collect(child)
                }
            case .array(let items): items.forEach(collect)
            default: break
            }
        }
        documents.values.forEach { $0.values.forEach(collect) }
        var representatives: [String: String] = [:]
        for project in projectKeys where !named.contains(project.name) {
            let key = "\(project.partner)\u{1}\(project.purpose ?? "")\u{1}\(project.commercial)"
            context.decisionProject[project.name] = representatives[key] ?? project.name
            if representatives[key] == nil { representatives[key] = project.name }
        }
        return context
    }

    // MARK: Hosts as the rules see them

    /// Every enrolled host with its facts, total resources and what is free on it now.
    struct HostPolicyRow: Sendable {
        var facts: HostFacts
        var partnerID: Int64
        var total: HostResources
        var free: HostAvailability
    }

    func policyHosts(_ context: PolicyContext, on connection: PostgresConnection) async throws -> [HostPolicyRow] {
        let used = try await activeUsage(on: connection)
        var rows: [HostPolicyRow] = []
        for try await (id, name, partner, region, labelsText, state, fresh, cpu, memory, gpusText, runner) in try await connection.query(
            """
            select id, name, partner_id, region, labels::text, state,
                   coalesce(last_heartbeat > now() - make_interval(secs => \(Double(configuration.hostTimeoutSeconds))), false),
                   cpu_millis, memory_bytes, gpus::text, runner
            from hosts order by id
            """, logger: logger
        ).decode((Int64, String, Int64, String, String, String, Bool, Int32, Int64, String, String).self) {
            let labels = try WireJSON.sharedDecoder.decode([String: String].self, from: Data(labelsText.utf8))
            let gpus = try gpuCache.gpus(host: id, json: gpusText)
            let condition: HostCondition = state == "draining" ? .draining : (state == "active" && fresh ? .up : .down)
            let usage = used[id] ?? (0, 0, [])
            let facts = HostFacts(
                id: id, name: name, partner: context.partnerNames[partner] ?? "#\(partner)", region: region,
                jurisdiction: context.regionJurisdiction[region] ?? "?", labels: labels, condition: condition,
                runner: RunnerKind(rawValue: runner) ?? .process)
            let free = HostAvailability(
                id: id, freeCPUMillis: Int(cpu) - usage.cpu, freeMemoryBytes: memory - usage.memory,
                freeGPUs: gpus.filter { !usage.gpus.contains($0.index) }, totalGPUs: gpus.count, partnerID: partner)
            rows.append(HostPolicyRow(facts: facts, partnerID: partner, total: HostResources(cpuMillis: Int(cpu), memoryBytes: memory, gpus: gpus), free: free))
        }
        return rows
    }

    // MARK: Submission checks

    /// Checks jobs against the rules before they are stored: a job the rules can never admit anywhere is rejected
    /// with every reason. Returns the jurisdictions each distinct job may reach, for the database's check.
    func admit(_ specs: [JobSpec], project: Int64, partner: Int64, on connection: PostgresConnection) async throws -> [String?] {
        let context = try await policyContext(on: connection)
        let active = context.active()
        var permitted: [JobFacts: String?] = [:]
        var result: [String?] = []
        for spec in specs {
            let facts = JobPolicyRow(
                id: 0, projectID: project, partnerID: partner, kind: spec.kind, inputs: spec.inputs, maxRuntimeSeconds: spec.maxRuntimeSeconds,
                network: spec.network ?? false
            ).facts(context)
            if let known = permitted[facts] {
                result.append(known)
                continue
            }
            var reasons = active.jobReasons(facts).filter { $0.category == .job }
            for output in spec.outputs {
                if context.snapshot.latest(PolicyKey(kind: .dataset, name: output)) != nil || spec.inputs.contains(output) {
                    reasons.append(Reason(.outputExists, subject: output, category: .job, detail: "output \(output) names a dataset that already exists"))
                }
            }
            guard reasons.isEmpty else {
                throw StoreError(
                    .rejected, "job rejected by the rules: " + reasons.map(\.label).joined(separator: ", "),
                    fields: reasons.map { FieldError(field: $0.code == .unknownProject ? "project" : ($0.code == .outputExists ? "outputs" : "inputs"), message: "\($0.label): \($0.detail)") },
                    reasons: reasons)
            }
            let codes = context.snapshot.permitted(facts, from: Date()).codes
            let text: String? = codes.map { "{" + $0.joined(separator: ",") + "}" }
            permitted[facts] = .some(text)
            result.append(text)
        }
        return result
    }

    // MARK: Applying rules

    /// Validates a rule document, checks that `principal` may write it, and applies it as a new version (or, in a
    /// dry run, only reports what it would change). In the same transaction: the jurisdictions every unfinished job
    /// may reach are recomputed, running jobs that a data, export or federation rule now forbids are stopped and
    /// requeued, and running guests that only the donor's policy now excludes are given the donor's grace.
    package func apply(_ request: PolicyApplyRequest, by principal: Principal) async throws -> PolicyApplyResult {
        let document: PolicyDocument
        switch PolicyDocument.parse(request.document) {
        case .success(let parsed): document = parsed
        case .failure(let failure):
            throw StoreError(.invalid, failure.errors.count == 1 ? failure.errors[0].description : "\(failure.errors.count) problems: \(failure)", fields: failure.errors)
        }
        let dryRun = request.dryRun ?? false
        return try await transaction { connection in
            // One writer of rules at a time: every apply sees the versions before it.
            try await connection.query("select generation from policy_state for update", logger: logger)
            let context = try await policyContext(on: connection)
            try authorize(document, by: principal, context: context)
            let errors = context.snapshot.referenceErrors(document)
            guard errors.isEmpty else {
                throw StoreError(.invalid, errors.count == 1 ? errors[0].description : "\(errors.count) problems: \(ValidationFailure(errors))", fields: errors)
            }
            let now = try await connection.query("select now()", logger: logger).decode(Date.self).collect().first ?? Date()
            let previous = context.snapshot.latest(document.key)
            let version = (previous?.version ?? 0) + 1
            let effective = max(document.effectiveFrom ?? now, now)
            var all = context.snapshot.versions.values.flatMap { $0 }
            all.append(PolicyVersion(document: document, version: version, effectiveFrom: effective))
            let after = PolicySnapshot(facts: context.snapshot.facts, versions: all)
            let impact = try await self.impact(of: after, comparedTo: context, at: now, on: connection)
            let previousDocument = previous.flatMap { context.documents[document.key]?[$0.version] }
            let result = PolicyApplyResult(
                kind: document.kind, name: document.name, version: version, effectiveFrom: effective, applied: !dryRun, previous: previousDocument,
                document: request.document, impact: impact.view)
            if dryRun { return result }
            let text = String(decoding: try WireJSON.shared.encode(request.document), as: UTF8.self)
            try await connection.query(
                """
                insert into policies (kind, name, version, document, source, effective_from, applied_by, reason)
                values (\(document.kind.rawValue), \(document.name), \(Int32(version)), \(text)::jsonb, \(request.source),
                        \(effective), \(principal.id), \(document.reason))
                """, logger: logger)
            try await enforce(after, impact: impact, label: "\(document.key)@v\(version)", on: connection)
            try await connection.query("update policy_state set enforced = \(after.active(at: now).id)", logger: logger)
            let concerned: [String] =
                switch document.body {
                case .dataset(let rule): [rule.steward]
                case .donorPolicy: [document.name]
                case .jurisdictionSet, .federation: []
                }
            try await audit(
                "rule-applied", actor: principal.name, partners: concerned, datasets: document.kind == .dataset ? [document.name] : [],
                policy: after.active(at: now).id,
                body: .object([
                    "rule": .string("\(document.key)@v\(version)"), "effective_from": .string(WireJSON.format(effective)),
                    "reason": document.reason.map(JSONValue.string) ?? .null, "document": request.document,
                    "stopped": .array(impact.view.stopped.map { .number(Double($0.id)) }),
                    "preempted": .array(impact.view.preempted.map { .number(Double($0.id)) }),
                ]),
                on: connection)

            return result
        }
    }

    /// Who may write what: a steward its datasets, an owner its donation policy, admins the federation's sets and
    /// guardrails. A derived dataset's inherited constraints may be relaxed only by the steward of the source.
    func authorize(_ document: PolicyDocument, by principal: Principal, context: PolicyContext) throws {
        func deny(_ message: String) -> StoreError { StoreError(.forbidden, "P_UNAUTHORISED: " + message) }
        switch document.body {
        case .jurisdictionSet, .federation:
            guard principal.role == .admin else { throw deny("only admins write \(document.kind.rawValue) rules") }
        case .donorPolicy:
            guard principal.role == .partnerAdmin, principal.partner == document.name else {
                throw deny("a donation policy is written by its partner's admin (partner \(document.name))")
            }
        case .dataset(let rule):
            guard principal.role == .partnerAdmin, let partner = principal.partner else {
                throw deny("datasets are written by their steward's partner admin")
            }
            let current = context.snapshot.latest(document.key)
            guard case .dataset(let old)? = current?.document.body else {
                guard rule.steward == partner else { throw deny("a new dataset's steward must be your partner (\(partner))") }
                guard rule.derivedFrom.allSatisfy({ $0.relaxed == nil }) else { throw deny("only a source's steward relaxes an inherited rule") }
                return
            }
            // Inheritance only grows, and each newly relaxed source is relaxed by its own steward.
            for inheritance in old.derivedFrom where !rule.derivedFrom.contains(where: { $0.source == inheritance.source }) {
                throw deny("\(document.name) inherits from \(inheritance.source); that link cannot be removed (relax it instead)")
            }
            var relaxedByPrincipal = false
            for inheritance in rule.derivedFrom {
                let before = old.derivedFrom.first { $0.source == inheritance.source }
                guard inheritance.relaxed != before?.relaxed else { continue }
                let sourceSteward: String? = {
                    if case .dataset(let source)? = context.snapshot.latest(PolicyKey(kind: .dataset, name: inheritance.source))?.document.body { return source.steward }
                    return nil
                }()
                guard let relaxed = inheritance.relaxed, relaxed.by == partner, sourceSteward == partner else {
                    throw deny("only \(sourceSteward ?? "the source's steward") may relax or restore what \(document.name) inherits from \(inheritance.source)")
                }
                relaxedByPrincipal = true
            }
            if old.steward == partner {
                guard rule.steward == partner else { throw deny("the steward cannot be changed by a rule version") }
                return
            }
            // A source's steward may relax its inheritance, and change nothing else.
            var unchanged = rule
            unchanged.derivedFrom = old.derivedFrom
            guard relaxedByPrincipal, unchanged == old else {
                throw deny("\(document.name) is stewarded by \(old.steward); you may only relax what it inherits from datasets you steward")
            }
        }
    }

    /// What a new set of rules does to unfinished jobs.
    struct Impact: Sendable {
        var view = PolicyImpact()
        /// Attempts to stop at once: (attempt, job, host, reason).
        var stop: [(attempt: Int64, job: Int64, host: Int64, reason: String)] = []
        /// Attempts to preempt after the grace: (attempt, job, reason, grace).
        var preempt: [(attempt: Int64, job: Int64, reason: String, grace: Int64)] = []
    }

    func impact(of after: PolicySnapshot, comparedTo context: PolicyContext, at now: Date, on connection: PostgresConnection) async throws -> Impact {
        var impact = Impact()
        let allHosts = try await policyHosts(context, on: connection)
        let hosts = allHosts.filter { $0.facts.condition == .up }
        let before = context.snapshot
        // Queued jobs, one row per class of alike jobs (a million queued jobs are a few classes).
        var memo: [JobFacts: (before: Int, after: Int)] = [:]
        func eligibleCount(_ snapshot: PolicySnapshot, _ job: JobFacts) -> Int {
            var keys: [PolicyHostKey: Bool] = [:]
            let prepared = snapshot.active(at: now).prepare(job)
            return hosts.filter { host in
                if let known = keys[host.facts.policyKey] { return known }
                let verdict = snapshot.evaluate(prepared, on: host.facts, at: now, decideOnly: true).eligible
                keys[host.facts.policyKey] = verdict
                return verdict
            }.count
        }
        for try await (ids, names, projectID, partnerID, kind, inputs, runtime, network) in try await connection.query(
            """
            select (array_agg(id order by priority desc, id))[1:50], (array_agg(name order by priority desc, id))[1:50],
                   project_id, partner_id, kind, inputs, max_runtime_seconds, \(unescaped: JobPolicyRow.networkSQL)
            from jobs j where state = 'queued' group by project_id, partner_id, kind, inputs, max_runtime_seconds, \(unescaped: JobPolicyRow.networkSQL)
            """, logger: logger
        ).decode(([Int64], [String], Int64, Int64, String, [String], Int64, Bool).self) {
            let row = JobPolicyRow(
                id: 0, projectID: projectID, partnerID: partnerID, kind: JobKind(rawValue: kind) ?? .training, inputs: inputs, maxRuntimeSeconds: runtime,
                network: network)
            let facts = row.facts(context)
            let counts = memo[facts] ?? (eligibleCount(before, facts), eligibleCount(after, facts))
            memo[facts] = counts
            let reasons = after.active(at: now).jobReasons(facts).map(\.label)
            let affected = zip(ids, names).map { AffectedJob(id: $0, name: $1, project: facts.project, state: .queued, host: nil, reasons: reasons) }
            if counts.before > 0, counts.after == 0 { impact.view.newlyBlocked += affected }
            if counts.before == 0, counts.after > 0 { impact.view.unblocked += affected }
        }
        // Running and assigned jobs, each on its host.
        let anyHost = Dictionary(uniqueKeysWithValues: allHosts.map { ($0.facts.id, $0.facts) })
        for try await (id, name, state, attempt, hostID, projectID, partnerID, kind, inputs, runtime, network) in try await connection.query(
            """
            select j.id, j.name, j.state, a.id, a.host_id, j.project_id, j.partner_id, j.kind, j.inputs, j.max_runtime_seconds,
                   \(unescaped: JobPolicyRow.networkSQL)
            from jobs j join attempts a on a.id = j.current_attempt
            where j.state in ('assigned', 'running') and a.state in ('assigned', 'running')
            """, logger: logger
        ).decode((Int64, String, String, Int64, Int64, Int64, Int64, String, [String], Int64, Bool).self) {
            guard let host = anyHost[hostID] else { continue }
            let row = JobPolicyRow(
                id: id, projectID: projectID, partnerID: partnerID, kind: JobKind(rawValue: kind) ?? .training, inputs: inputs, maxRuntimeSeconds: runtime,
                network: network)
            let facts = row.facts(context)
            var up = host
            up.condition = .up  // a host's own state is not a rule change
            // Only what the change itself does: a job already failing a rule before is not the change's doing.
            let failures = after.active(at: now).evaluate(facts, on: up, at: now).failures.filter { $0.category != .host && $0.category != .policy }
            guard !failures.isEmpty else { continue }
            let labels = failures.map(\.label)
            let job = AffectedJob(id: id, name: name, project: facts.project, state: JobState(rawValue: state) ?? .running, host: host.name, reasons: labels)
            let reason = "rule change: " + labels.joined(separator: ", ")
            if failures.contains(where: \.stopsAtOnce) {
                impact.view.stopped.append(job)
                impact.stop.append((attempt, id, hostID, reason))
            } else {
                let grace = donorGrace(after, host: host, at: now)
                impact.view.preempted.append(job)
                impact.view.graceSeconds = grace
                impact.preempt.append((attempt, id, reason, grace))
            }
        }
        return impact
    }

    func donorGrace(_ snapshot: PolicySnapshot, host: HostFacts, at now: Date) -> Int64 {
        if case .donorPolicy(let policy)? = snapshot.active(at: now).donors[host.partner]?.document.body { return policy.graceSeconds }
        return DonorPolicy.defaultGraceSeconds
    }

    /// Writes what a rule change requires, in the caller's transaction.
    func enforce(_ snapshot: PolicySnapshot, impact: Impact, label: String, on connection: PostgresConnection) async throws {
        let context = try await policyContext(on: connection)
        let now = Date()
        // Recompute every unfinished job's permitted jurisdictions, one statement per class.
        let classes = try await connection.query(
            """
            select project_id, partner_id, kind, inputs from jobs where state = 'queued'
            union
            select j.project_id, j.partner_id, j.kind, j.inputs from attempts a join jobs j on j.id = a.job_id and j.current_attempt = a.id
            where a.state in ('assigned', 'running') and j.state in ('assigned', 'running')
            """, logger: logger
        ).decode((Int64, Int64, String, [String]).self).collect()
        for (projectID, partnerID, kind, inputs) in classes {
            let facts = JobPolicyRow(id: 0, projectID: projectID, partnerID: partnerID, kind: JobKind(rawValue: kind) ?? .training, inputs: inputs, maxRuntimeSeconds: 0)
                .facts(context)
            let codes = context.snapshot.permitted(facts, from: now).codes
            try await connection.query(
                """
                update jobs set permitted_jurisdictions = \(codes)
                where project_id = \(projectID) and partner_id = \(partnerID) and kind = \(kind) and inputs = \(inputs)
                  and state in ('queued', 'assigned', 'running') and permitted_jurisdictions is distinct from \(codes)
                """, logger: logger)
        }
        for (attempt, job, reason, grace) in impact.preempt {
            try await connection.query(
                """
                with a as (
                    update attempts set stop_after = now() + make_interval(secs => \(Double(grace))), stop_reason = \(reason)
                    where id = \(attempt) and stop_after is null returning id
                )
                insert into job_events (job_id, attempt_id, kind, message)
                select \(job), id, 'preemption-scheduled', \(reason + "; preempted in \(ActivePolicies.duration(TimeInterval(grace))) (donor grace)") from a
                """, logger: logger)
        }
        // Then stop what the change forbids.
        if !impact.stop.isEmpty {
            try await stopAttempts(impact.stop.map { ($0.attempt, $0.reason) }, event: "policy-stop", on: connection)
        }
        try await connection.query("select pg_notify(\(Channel.scheduler), '')", logger: logger)
        logger.info("rule applied", metadata: ["rule": "\(label)", "stopped": "\(impact.stop.count)", "preempting": "\(impact.preempt.count)"])
    }

    /// Ends attempts that a rule forbids (or whose claim was refused) and requeues their jobs without using a retry:
    /// the agent is told to stop at its next heartbeat, which the `NOTIFY` to its host brings forward.
    func stopAttempts(_ attempts: [(attempt: Int64, reason: String)], event: String, on connection: PostgresConnection) async throws {
        let ids = attempts.map(\.attempt)
        let reasons = attempts.map(\.reason)
        let rows = try await connection.query(
            """
            with s as (
                select * from unnest(\(ids)::bigint[], \(reasons)::text[]) as s(id, reason)
            ), a as (
                update attempts a set state = 'preempted', ended_at = now(), reason = s.reason
                from s where a.id = s.id and a.state in ('assigned', 'running')
                returning a.id, a.job_id, a.host_id, s.reason
            ), j as (
                update jobs j set state = 'queued', policy_stops = policy_stops + 1, reason = a.reason,
                    last_preempted_at = case when \(event) = 'preempted' then now() else j.last_preempted_at end
                from a where j.id = a.job_id and j.current_attempt = a.id and j.state in ('assigned', 'running')
                returning j.id
            ), e as (
                insert into job_events (job_id, attempt_id, kind, message)
                select a.job_id, a.id, \(event), a.reason || '; requeued' from a
            ), stopping as (
                select a.*, \(event)::text as event from a
            ), audited as (
                \(unescaped: Self.auditRows(
                    kind: "x.event", actor: "'server'", body: "json_build_object('attempt', x.id, 'reason', x.reason, 'requeued', true)",
                    from: "stopping"))
            )
            select a.job_id, a.host_id, (select count(*) from audited) from a
            """, logger: logger
        ).decode((Int64, Int64, Int64).self).collect()
        for (job, host, _) in rows {
            try await connection.query("select pg_notify(\(Channel.job), \(String(job))), pg_notify(\(Channel.assign), \(String(host)))", logger: logger)
        }
        if !rows.isEmpty { try await connection.query("select pg_notify(\(Channel.scheduler), '')", logger: logger) }
    }

    /// When a version announced for later has taken effect, checks running jobs against the rules now in force,
    /// as an apply would (called by the reaper; the first replica to notice does it, under the rules' lock).
    ///
    /// - Returns: how many running jobs were stopped or scheduled for preemption.
    @discardableResult
    package func enforceAnnouncedRules() async throws -> Int {
        let state = try await client.query("select generation, enforced from policy_state", logger: logger).decode((Int64, String?).self).collect()
        guard let (generation, enforced) = state.first else { return 0 }
        let context = try await client.withConnection { try await policyContext(on: $0, knownGeneration: generation) }
        guard enforced != context.active().id else { return 0 }
        return try await transaction { connection in
            let locked = try await connection.query("select enforced from policy_state for update", logger: logger).decode(String?.self).collect()
            let context = try await policyContext(on: connection)
            let now = Date()
            let current = context.active(at: now).id
            guard locked.first != .some(current) else { return 0 }
            let impact = try await self.impact(of: context.snapshot, comparedTo: context, at: now, on: connection)
            try await enforce(context.snapshot, impact: impact, label: "rules in force \(current)", on: connection)
            try await connection.query("update policy_state set enforced = \(current)", logger: logger)
            return impact.stop.count + impact.preempt.count
        }
    }

    /// Preempts running guests whose donor grace has run out (called by the reaper).
    @discardableResult
    package func preemptDue() async throws -> Int {
        try await transaction { connection in
            let due = try await connection.query(
                """
                select a.id, coalesce(a.stop_reason, 'donor policy') from attempts a
                where a.stop_after < now() and a.state in ('assigned', 'running')
                for no key update skip locked
                """, logger: logger
            ).decode((Int64, String).self).collect()
            guard !due.isEmpty else { return 0 }
            try await stopAttempts(due.map { ($0.0, $0.1 + "; grace over") }, event: "preempted", on: connection)
            return due.count
        }
    }

    // MARK: Reading rules

    package func policies(kind: PolicyKind?, name: String?, history: Bool) async throws -> [PolicyVersionView] {
        let rows = try await client.query(
            """
            select p.kind, p.name, p.version, p.effective_from, p.applied_at, coalesce(pr.name, 'system'), p.produced_by_job, p.reason,
                   p.document::text, p.source
            from policies p left join principals pr on pr.id = p.applied_by
            where (\(kind?.rawValue)::text is null or p.kind = \(kind?.rawValue))
              and (\(name)::text is null or p.name = \(name))
              and (\(history) or p.version = (select max(version) from policies q where q.kind = p.kind and q.name = p.name))
            order by p.kind, p.name, p.version
            """, logger: logger
        ).decode((String, String, Int32, Date, Date, String, Int64?, String?, String, String?).self).collect()
        let decoder = JSONDecoder()
        return try rows.map { kind, name, version, effective, applied, by, job, reason, text, source in
            PolicyVersionView(
                kind: PolicyKind(rawValue: kind) ?? .dataset, name: name, version: Int(version), effectiveFrom: effective, appliedAt: applied,
                appliedBy: by, producedByJob: job, reason: reason, document: try decoder.decode(JSONValue.self, from: Data(text.utf8)), source: source)
        }
    }

    package func datasets(name: String? = nil) async throws -> [DatasetView] {
        try await policies(kind: .dataset, name: name, history: false).compactMap { view in
            guard case .success(let document) = PolicyDocument.parse(view.document), case .dataset(let rule) = document.body else { return nil }
            var residency = rule.residency.allow?.joined(separator: ", ") ?? "anywhere"
            if !rule.residency.deny.isEmpty { residency += " except " + rule.residency.deny.joined(separator: ", ") }
            if !rule.residency.hostLabels.isEmpty { residency += " on " + rule.residency.hostLabels.sorted { $0.key < $1.key }.map { "\($0)=\($1)" }.joined(separator: ",") }
            let inherited = rule.derivedFrom.filter { $0.relaxed == nil }.map(\.source)
            if !inherited.isEmpty { residency += " + inherited from " + inherited.joined(separator: ", ") }
            return DatasetView(
                name: view.name, version: view.version, steward: rule.steward, dataClass: rule.dataClass, exportClass: rule.exportClass,
                residency: residency, derivedFrom: rule.derivedFrom.map(\.source), producedByJob: view.producedByJob, document: view.document)
        }
    }

    // MARK: Lineage

    /// Registers a succeeded job's declared outputs as datasets derived from its inputs (in the caller's
    /// transaction): they inherit every input's residency, use conditions and export class through `derived_from`,
    /// and take the strictest class. Their steward is the job's partner.
    func registerOutputs(job: Int64, on connection: PostgresConnection) async throws {
        let rows = try await connection.query(
            """
            select coalesce(array(select jsonb_array_elements_text(j.spec->'outputs')), '{}'), j.inputs, pa.name
            from jobs j join partners pa on pa.id = j.partner_id where j.id = \(job)
            """, logger: logger
        ).decode(([String], [String], String).self).collect()
        guard let (outputs, inputs, partner) = rows.first, !outputs.isEmpty else { return }
        let context = try await policyContext(on: connection)
        let active = context.active()
        let dataClass = inputs.compactMap { name -> DataClass? in
            if case .dataset(let rule)? = active.datasets[name]?.document.body { return rule.dataClass }
            return nil
        }.max() ?? .public
        for output in outputs {
            let document: JSONValue = .object([
                "kind": .string("dataset"), "name": .string(output), "steward": .string(partner), "class": .string(dataClass.rawValue),
                "derived_from": .array(inputs.map(JSONValue.string)),
                "reason": .string("output of job \(job)"),
            ])
            let text = String(decoding: try WireJSON.shared.encode(document), as: UTF8.self)
            let inserted = try await connection.query(
                """
                insert into policies (kind, name, version, document, effective_from, produced_by_job, reason)
                select 'dataset', \(output), 1, \(text)::jsonb, now(), \(job), 'output of job ' || \(String(job))
                where not exists (select 1 from policies where kind = 'dataset' and name = \(output))
                returning id
                """, logger: logger
            ).decode(Int64.self).collect()
            let message = inserted.isEmpty
                ? "output \(output) not registered: a dataset of that name exists"
                : "output \(output) registered as a dataset derived from \(inputs.isEmpty ? "nothing" : inputs.joined(separator: ", ")) (class \(dataClass.rawValue))"
            try await connection.query("insert into job_events (job_id, kind, message) values (\(job), 'output', \(message))", logger: logger)
            if !inserted.isEmpty {
                try await audit(
                    "dataset-registered", actor: "server", job: job, partners: [partner], datasets: [output] + inputs,
                    body: .object(["dataset": .string(output), "derived_from": .array(inputs.map(JSONValue.string)), "class": .string(dataClass.rawValue)]),
                    on: connection)
            }
        }
    }
}
