import ComityCore
import Foundation
import Logging
import PostgresNIO

/// Reclaim: taking capacity back from borrowers for jobs that are owed it.
extension Store {
    /// Plans reclaims for jobs a pass could not place, in the order the pass considered them, at most
    /// `reclaimsPerPass`:
    ///
    /// - an owner's job may preempt guests on the owner's own hosts;
    /// - a job whose partner holds less than its entitlement may preempt guests of other partners anywhere it may
    ///   legally run.
    ///
    /// Either way only hosts the rules admit the job on are considered (never preempt for capacity it could not use),
    /// and only borrowers' reclaimable guests (see ``Reclaim``) are victims. Victims are told to stop after the
    /// donor's grace (the reaper's ``preemptDue()`` stops them); the freed host is reserved for the job until it is
    /// placed there.
    func planReclaims(
        _ unplaced: [PendingJob], round: SharingRound, context: PolicyContext, memo: inout EligibilityMemo, reserved: Set<Int64>,
        on connection: PostgresConnection
    ) async throws {
        // Standings as they will be: attempts already being stopped no longer count for their partners (a borrower
        // is never reclaimed below its entitlement across passes either), and jobs holding reservations count for
        // theirs (an owed partner does not reclaim past its share).
        var standings = round.partnerStandings
        for (partner, holding) in try await stoppingHoldings(round: round, on: connection) { standings[partner]?.allocated -= holding }
        for (partner, holding) in try await reservedHoldings(round: round, on: connection) {
            standings[partner, default: ShareStanding(entitled: .zero)].allocated += holding
        }
        // Only borrowers' guests can be victims: without a borrower there is nothing to read.
        let borrowers = standings.filter { $0.value.heldRatio(capacity: round.pool.capacity) > 1 + 1e-9 }.map(\.key)
        guard !borrowers.isEmpty else { return }
        let guests = try await reclaimableGuests(of: borrowers, round: round, on: connection)
        guard !guests.isEmpty else { return }
        var guestsByHost = Dictionary(grouping: guests, by: \.hostID)
        let hostIndex = Dictionary(uniqueKeysWithValues: round.hosts.enumerated().map { ($0.element.id, $0.offset) })
        let now = Date()
        var busyHosts = round.reservedHosts
        var plans = 0
        var tried = 0
        // Jobs alike (request, rules class, partner, service or not) get the same answer: one try for all of them.
        var triedKeys: Set<ReclaimKey> = []
        for job in unplaced where !reserved.contains(job.id) {
            guard plans < configuration.reclaimsPerPass, tried < Self.reclaimCandidates else { break }
            let service = round.isService(job)
            guard triedKeys.insert(ReclaimKey(request: job.resources, policyClass: job.policyClass, partnerID: job.partnerID, service: service)).inserted
            else { continue }
            tried += 1
            let owed = (standings[job.partnerID]?.heldRatio(capacity: round.pool.capacity) ?? 0) < 1 - 1e-9
                && (round.sharing.entitlements[job.partnerID].map { $0.gpu + $0.cpu + $0.memory > 0 } ?? false)
            // Hosts with guests the job may take back: its partner's own, or any when its partner is owed its share;
            // only where the rules and sharing (quotas, limits, services) admit the job.
            var hosts: [HostAvailability] = []
            var candidates: [RunningGuest] = []
            for (hostID, onHost) in guestsByHost where !busyHosts.contains(hostID) {
                guard let index = hostIndex[hostID] else { continue }
                let host = round.hosts[index]
                guard host.partnerID == job.partnerID || owed, !round.spread.excludes(job.id, host: hostID), memo.eligible(job.policyClass, host.policyKey),
                    round.admission.failures(job, service: service, on: host, collecting: false).isEmpty
                else { continue }
                let victims = onHost.filter { $0.partnerID != job.partnerID }
                guard !victims.isEmpty else { continue }
                hosts.append(host)
                candidates += victims
            }
            hosts.sort { $0.id < $1.id }
            guard !hosts.isEmpty,
                let plan = Reclaim.plan(for: job.resources, on: hosts, guests: candidates, standings: standings, capacity: round.pool.capacity),
                !plan.victims.isEmpty
            else { continue }
            plans += 1
            busyHosts.insert(plan.hostID)
            let taken = Set(plan.victims.map(\.attemptID))
            guestsByHost[plan.hostID]?.removeAll { taken.contains($0.attemptID) }
            for victim in plan.victims { standings[victim.partnerID]?.allocated -= victim.holding }
            standings[job.partnerID, default: ShareStanding(entitled: .zero)].allocated += round.pool.estimate(job.resources, onHost: plan.hostID)
            let own = round.pool.hostPartner[plan.hostID] == job.partnerID
            let host = round.pool.factsByHost[plan.hostID]
            let grace = host.map { donorGrace(context.snapshot, host: $0, at: now) } ?? DonorPolicy.defaultGraceSeconds
            let why = own ? "its owner's job \(job.id) needs the host" : "job \(job.id) of a partner below its share needs the capacity"
            let reason = "reclaimed: \(why)"
            let victims = plan.victims.map(\.attemptID)
            try await connection.query(
                """
                with a as (
                    update attempts set stop_after = now() + make_interval(secs => \(Double(grace))), stop_reason = \(reason)
                    where id = any(\(victims)::bigint[]) and stop_after is null and state in ('assigned', 'running')
                    returning id, job_id
                ), victim_events as (
                    insert into job_events (job_id, attempt_id, kind, message)
                    select job_id, id, 'preemption-scheduled', \(reason + "; preempted in \(ActivePolicies.duration(TimeInterval(grace))) (donor grace)") from a
                ), reserved as (
                    insert into reservations (job_id, host_id, expires_at)
                    values (\(job.id), \(plan.hostID), now() + make_interval(secs => \(Double(grace + 2 * Int64(configuration.leaseSeconds) + 60))))
                    on conflict (job_id) do nothing
                )
                insert into job_events (job_id, kind, message)
                select \(job.id), 'reclaim', 'reclaiming ' || \(host?.name ?? "#\(plan.hostID)") || ': preempting job(s) '
                       || string_agg(job_id::text, ', ' order by job_id) || ' after the donor''s grace (' || \(ActivePolicies.duration(TimeInterval(grace))) || ')'
                from a having count(*) > 0
                """, logger: logger)
            logger.info(
                "reclaim planned",
                metadata: ["job.id": "\(job.id)", "host.id": "\(plan.hostID)", "victims": "\(victims)", "grace": "\(grace)", "owner": "\(own)"])
        }
    }

    /// How many of the jobs a pass left waiting are considered for a reclaim.
    static let reclaimCandidates = 16

    /// Running guests of `borrowers` that a reclaim may preempt: preemptible jobs (a service is only if it opted in),
    /// not preempted within the cool-down, not already being stopped, on hosts in the pool.
    func reclaimableGuests(of borrowers: [Int64], round: SharingRound, on connection: PostgresConnection) async throws -> [RunningGuest] {
        var guests: [RunningGuest] = []
        for try await (attempt, job, host, partner, priority, assigned, cpu, memory, indices) in try await connection.query(
            """
            select a.id, a.job_id, a.host_id, a.partner_id, j.priority, extract(epoch from a.assigned_at)::float8, a.cpu_millis, a.memory_bytes, a.gpu_indices
            from attempts a join jobs j on j.id = a.job_id
            where a.state in ('assigned', 'running') and a.guest and a.partner_id = any(\(borrowers)::bigint[]) and a.stop_after is null and j.preemptible
              and (j.last_preempted_at is null or j.last_preempted_at < now() - make_interval(secs => \(Double(configuration.preemptionCooldownSeconds))))
            """, logger: logger
        ).decode((Int64, Int64, Int64, Int64, Int32, Double, Int32, Int64, [Int32]).self) {
            guard round.pool.hostPartner[host] != nil else { continue }
            let gpuIndices = indices.map(Int.init)
            let gpus = (round.pool.hostGPUs[host] ?? []).filter { gpuIndices.contains($0.index) }
            guests.append(
                RunningGuest(
                    attemptID: attempt, jobID: job, hostID: host, partnerID: partner, priority: Int(priority), startedAt: assigned, cpuMillis: Int(cpu),
                    memoryBytes: memory, gpus: gpus,
                    holding: round.pool.weighted(
                        ResourceRequest(cpuMillis: Int(cpu), memoryBytes: memory), gpuIndices: gpuIndices, on: host, weights: round.sharing.weights),
                    reclaimable: true))
        }
        return guests
    }
}

struct ReclaimKey: Hashable {
    var request: ResourceRequest
    var policyClass: Int
    var partnerID: Int64
    var service: Bool
}

extension Store {
    /// Per partner: what its attempts that are being stopped (after a grace) hold.
    func stoppingHoldings(round: SharingRound, on connection: PostgresConnection) async throws -> [Int64: ShareVector] {
        var result: [Int64: ShareVector] = [:]
        for try await (partner, host, cpu, memory, indices) in try await connection.query(
            """
            select partner_id, host_id, cpu_millis, memory_bytes, gpu_indices from attempts
            where stop_after is not null and state in ('assigned', 'running') and partner_id is not null
            """, logger: logger
        ).decode((Int64, Int64, Int32, Int64, [Int32]).self) {
            result[partner, default: .zero] += round.pool.weighted(
                ResourceRequest(cpuMillis: Int(cpu), memoryBytes: memory), gpuIndices: indices.map(Int.init), on: host, weights: round.sharing.weights)
        }
        return result
    }

    /// Per partner: what its jobs holding reservations will hold once placed (estimated on the reserved host).
    func reservedHoldings(round: SharingRound, on connection: PostgresConnection) async throws -> [Int64: ShareVector] {
        var result: [Int64: ShareVector] = [:]
        for try await (partner, host, cpu, memory, gpus) in try await connection.query(
            """
            select j.partner_id, r.host_id, j.cpu_millis, j.memory_bytes, j.gpus from reservations r join jobs j on j.id = r.job_id
            where j.state = 'queued'
            """, logger: logger
        ).decode((Int64, Int64, Int32, Int64, Int32).self) {
            result[partner, default: .zero] += round.pool.estimate(
                ResourceRequest(cpuMillis: Int(cpu), memoryBytes: memory, gpus: Int(gpus)), onHost: host)
        }
        return result
    }
}

extension SharingRound.Admission {
    /// Whether the job's regional quotas leave room for it in the host's region.
    func admitsRegion(_ job: PendingJob, on host: HostAvailability) -> Bool {
        !quotas.hasRegional
            || quotas.exceeded(partnerID: job.partnerID, projectID: job.projectID, region: host.region, SharingRound.usage(job.resources)) == nil
    }
}
