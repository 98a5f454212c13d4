import ComityAPI
import ComityCore
import Foundation
import Logging
import PostgresNIO

/// The audit ledger: appends happen inside the statements and transactions that make the changes they record (rows
/// of `audit_pending`: ``auditInsert`` for many at once, `audit_append1` of migration 0003 for one); the
/// sequencer (``chainAudit()``) chains them; reading, checkpoints and verification support are here.
extension Store {
    /// Chains every committed pending entry (in batches, each its own transaction under the ledger's lock).
    /// Every read of the ledger calls it first, so a reader sees every change committed before it asked.
    ///
    /// - Returns: how many entries were chained.
    @discardableResult
    package func chainAudit(batch: Int = 5_000) async throws -> Int {
        var total = 0
        while true {
            let chained = try await transaction { try await chainAuditBatch(limit: batch, on: $0) }
            total += chained
            if chained < batch { return total }
        }
    }

    /// The sequencer's step: under the ledger's advisory lock (chainers of every replica take turns), the oldest
    /// committed pending entries get the next `seq`s; their leaves and chain hashes are computed here (one SHA-256
    /// pass each, instead of PL/pgSQL string building) and they move from `audit_pending` to `audit_log` in one
    /// statement. Pending entries of transactions still in flight are invisible here and wait for the next step.
    func chainAuditBatch(limit: Int, on connection: PostgresConnection) async throws -> Int {
        try await connection.query("select pg_advisory_xact_lock(\(Self.auditLockKey))", logger: logger)
        var ids: [Int64] = []
        var entries: [AuditEntry] = []
        for try await row in try await connection.query(
            """
            select id, at_us, kind, actor, job_id, host_id, partners, region, datasets, policy, body from audit_pending
            order by id limit \(Int64(limit))
            """, logger: logger)
        {
            let (id, at, kind, actor, job, host, partners, region, datasets, policy, body) = try row.decode(
                (Int64, Int64, String, String, Int64?, Int64?, [String], String, [String], String, String).self)
            ids.append(id)
            entries.append(
                AuditEntry(
                    seq: 0, atMicros: at, kind: kind, actor: actor, jobId: job, hostId: host, partners: partners, region: region, datasets: datasets,
                    policy: policy, body: body))
        }
        guard !entries.isEmpty else { return 0 }
        let head = try await connection.query("select seq, hash from audit_log order by seq desc limit 1", logger: logger)
            .decode((Int64, ByteBuffer).self).collect().first
        var seq = head?.0 ?? 0
        var previous = head.map { Array($0.1.readableBytesView) } ?? AuditEntry.genesis
        var seqs: [Int64] = []
        var leaves: [String] = []
        var hashes: [String] = []
        seqs.reserveCapacity(entries.count)
        for var entry in entries {
            seq += 1
            entry.seq = seq
            let leaf = entry.computedLeaf
            previous = AuditEntry.chain(previous: previous, leaf: leaf)
            seqs.append(seq)
            leaves.append(Hex.encode(leaf))
            hashes.append(Hex.encode(previous))
        }
        try await connection.query(
            """
            with moved as (
                delete from audit_pending where id = any(\(ids)::bigint[]) returning *
            )
            insert into audit_log (seq, at_us, kind, actor, job_id, host_id, partners, region, datasets, policy, body, leaf, hash)
            select c.seq, p.at_us, p.kind, p.actor, p.job_id, p.host_id, p.partners, p.region, p.datasets, p.policy, p.body,
                   decode(c.leaf, 'hex'), decode(c.hash, 'hex')
            from unnest(\(ids)::bigint[], \(seqs)::bigint[], \(leaves)::text[], \(hashes)::text[]) as c(id, seq, leaf, hash)
            join moved p on p.id = c.id
            """, logger: logger)
        return entries.count
    }

    /// The ledger's advisory lock (also in migrations/0003_audit.sql).
    static let auditLockKey: Int64 = 7_236_996_542_101

    /// SQL of a CTE body that appends one entry per row of `source` (a relation with `job_id`, `host_id` and
    /// whatever `body` reads, aliased `x`), naming the job's and the host's partners, the host's region and the
    /// job's inputs. It returns a row per entry (count them); an empty `source` appends nothing.
    ///
    /// The arguments are SQL expressions written in this module, never input.
    static func auditRows(kind: String, actor: String, body: String, policy: String = "''", from source: String) -> String {
        auditInsert(
            kind: kind, actor: actor, job: "x.job_id", host: "x.host_id",
            partners: "case when jp.name = hp.name then array[jp.name] else array[jp.name, hp.name] end", region: "h.region",
            datasets: "j.inputs", policy: policy, body: body,
            from: """
                \(source) x join jobs j on j.id = x.job_id join partners jp on jp.id = j.partner_id
                join hosts h on h.id = x.host_id join partners hp on hp.id = h.partner_id
                """,
            order: "x.job_id, x.host_id")
    }

    /// Like ``auditRows(kind:actor:body:policy:from:)`` for rows with a `job_id` and no host.
    static func auditJobs(kind: String, actor: String, body: String, from source: String) -> String {
        auditInsert(
            kind: kind, actor: actor, job: "x.job_id", host: "null::bigint", partners: "array[jp.name]", region: "''",
            datasets: "j.inputs", policy: "''", body: body,
            from: "\(source) x join jobs j on j.id = x.job_id join partners jp on jp.id = j.partner_id", order: "x.job_id")
    }

    /// SQL of a CTE body appending a `submitted` entry per row of the CTE `inserted` (the new jobs, aliased `x`, with
    /// `id` and `inputs`), in id order. The CTE `who` (aliased `w`) holds `actor` and the project's `partner`.
    static func auditSubmitted(body: String) -> String {
        auditInsert(
            kind: "'submitted'", actor: "w.actor", job: "x.id", host: "null::bigint", partners: "array[w.partner]", region: "''",
            datasets: "x.inputs", policy: "''", body: body, from: "inserted x cross join who w", order: "x.id")
    }

    /// SQL appending a `host-down` entry per row of a CTE `down` (hosts just marked down: id, name, region,
    /// partner_id). `reason` is a fixed text of this module.
    static func auditHostsDown(reason: String) -> String {
        auditInsert(
            kind: "'host-down'", actor: "'reaper'", job: "null::bigint", host: "d.id", partners: "array[p.name]", region: "d.region",
            datasets: "'{}'", policy: "''", body: "json_build_object('host', d.name, 'reason', '\(reason)')",
            from: "down d join partners p on p.id = d.partner_id", order: "d.id")
    }

    /// Appends a row of `audit_pending` per row of `from`, in `order`, with what `audit_append` (migration 0010) writes
    /// from its arrays: the time of the append, and empty text and lists for missing values. Inserting from the rows
    /// themselves saves building nine arrays and taking them apart again (6–10 ms of a 2,000-placement write).
    static func auditInsert(
        kind: String, actor: String, job: String, host: String, partners: String, region: String, datasets: String, policy: String,
        body: String, from: String, order: String
    ) -> String {
        """
        insert into audit_pending (at_us, kind, actor, job_id, host_id, partners, region, datasets, policy, body)
        select (extract(epoch from clock_timestamp()) * 1000000)::bigint, (\(kind))::text, coalesce((\(actor))::text, ''), \(job), \(host),
               \(partners), coalesce((\(region))::text, ''), coalesce((\(datasets))::text[], '{}'), coalesce((\(policy))::text, ''),
               coalesce((\(body))::text, '{}')
        from \(from)
        order by \(order)
        returning 1
        """
    }

    /// Appends one entry in the caller's transaction (or as its own statement).
    func audit(
        _ kind: String, actor: String, job: Int64? = nil, host: Int64? = nil, partners: [String] = [], region: String = "",
        datasets: [String] = [], policy: String = "", body: JSONValue = .object([:]), on connection: PostgresConnection
    ) async throws {
        let text = String(decoding: try WireJSON.shared.encode(body), as: UTF8.self)
        try await connection.query(
            """
            select audit_append1(\(kind), \(actor), \(job), \(host), \(partners.joined(separator: ",")), \(region),
                                 \(datasets.joined(separator: ",")), \(policy), \(text))
            """, logger: logger)
    }

    /// Records a refused request (401/403) on its own.
    package func auditDenied(actor: String, method: String, path: String, status: Int, message: String) async throws {
        try await client.withConnection { connection in
            try await audit(
                "denied", actor: actor,
                body: .object(["method": .string(method), "path": .string(path), "status": .number(Double(status)), "message": .string(message)]),
                on: connection)
        }
    }

    // MARK: Reading

    static let auditColumns = "seq, at_us, kind, actor, job_id, host_id, partners, region, datasets, policy, body, leaf, hash"

    static func auditEntry(_ row: PostgresRow) throws -> AuditEntry {
        let (seq, at, kind, actor, job, host, partners, region, datasets, policy, body, leaf, hash) = try row.decode(
            (Int64, Int64, String, String, Int64?, Int64?, [String], String, [String], String, String, ByteBuffer, ByteBuffer).self)
        return AuditEntry(
            seq: seq, atMicros: at, kind: kind, actor: actor, jobId: job, hostId: host, partners: partners, region: region, datasets: datasets,
            policy: policy, body: body, leaf: Hex.encode(leaf.readableBytesView), hash: Hex.encode(hash.readableBytesView))
    }

    /// Entries in sequence order after `after`, matching every given filter. `partner` limits to entries that
    /// concern that partner (what a partner admin may read).
    package func auditEntries(_ filter: AuditFilter, after: Int64, limit: Int) async throws -> [AuditEntry] {
        try await chainAudit()
        let rows = try await client.query(
            """
            select \(unescaped: Self.auditColumns) from audit_log
            where seq > \(after)
              and (\(filter.job)::bigint is null or job_id = \(filter.job))
              and (\(filter.host)::bigint is null or host_id = \(filter.host))
              and (\(filter.partner)::text is null or \(filter.partner) = any(partners))
              and (\(filter.dataset)::text is null or \(filter.dataset) = any(datasets))
              and (\(filter.region)::text is null or region = \(filter.region))
              and (\(filter.kind)::text is null or kind = \(filter.kind))
              and (\(filter.since)::timestamptz is null or at >= \(filter.since))
              and (\(filter.until)::timestamptz is null or at < \(filter.until))
            order by seq limit \(Int64(limit))
            """, logger: logger)
        var entries: [AuditEntry] = []
        for try await row in rows { entries.append(try Self.auditEntry(row)) }
        return entries
    }

    /// The ledger's head: its size and the chain hash of its last entry (the genesis hash when empty).
    package func auditHead() async throws -> (size: Int64, root: [UInt8]) {
        try await chainAudit()
        let rows = try await client.query("select seq, hash from audit_log order by seq desc limit 1", logger: logger)
            .decode((Int64, ByteBuffer).self).collect()
        guard let (size, hash) = rows.first else { return (0, AuditEntry.genesis) }
        return (size, Array(hash.readableBytesView))
    }

    /// Stores a signed checkpoint (once per size).
    package func saveCheckpoint(_ checkpoint: AuditCheckpoint) async throws {
        try await client.query(
            """
            insert into audit_checkpoints (size, root, text) values (\(checkpoint.size), \(ByteBuffer(bytes: checkpoint.root)), \(checkpoint.text))
            on conflict (size) do nothing
            """, logger: logger)
    }

    /// The latest stored checkpoint's text, if any.
    package func latestCheckpoint() async throws -> (size: Int64, text: String)? {
        try await client.query("select size, text from audit_checkpoints order by size desc limit 1", logger: logger)
            .decode((Int64, String).self).collect().first.map { (size: $0.0, text: $0.1) }
    }
}

/// Filters of `comity audit log` and `export`.
package struct AuditFilter: Sendable {
    package var job: Int64?
    package var host: Int64?
    package var partner: String?
    package var dataset: String?
    package var region: String?
    package var kind: String?
    package var since: Date?
    package var until: Date?

    package init(
        job: Int64? = nil, host: Int64? = nil, partner: String? = nil, dataset: String? = nil, region: String? = nil, kind: String? = nil,
        since: Date? = nil, until: Date? = nil
    ) {
        self.job = job
        self.host = host
        self.partner = partner
        self.dataset = dataset
        self.region = region
        self.kind = kind
        self.since = since
        self.until = until
    }
}

extension Store {
    /// Links of the chain (hashes only) after `after`.
    package func auditLinks(after: Int64, limit: Int) async throws -> [AuditLink] {
        try await chainAudit()
        return try await client.query(
            "select seq, leaf, hash from audit_log where seq > \(after) order by seq limit \(Int64(limit))", logger: logger
        ).decode((Int64, ByteBuffer, ByteBuffer).self).collect().map {
            AuditLink(seq: $0.0, leaf: Hex.encode($0.1.readableBytesView), hash: Hex.encode($0.2.readableBytesView))
        }
    }
}
