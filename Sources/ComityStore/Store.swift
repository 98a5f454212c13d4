import ComityAPI
import ComityCore
import Crypto
import Foundation
import Logging
import PostgresNIO
import Synchronization

/// Who is making a request, as resolved from a bearer token.
package struct Principal: Sendable, Hashable {
    package var id: Int64
    package var name: String
    package var role: Role
    package var partnerID: Int64?
    package var partner: String?
    package var projectID: Int64?
    package var project: String?
    package var hostID: Int64?

    package init(
        id: Int64, name: String, role: Role, partnerID: Int64? = nil, partner: String? = nil, projectID: Int64? = nil,
        project: String? = nil, hostID: Int64? = nil
    ) {
        self.id = id
        self.name = name
        self.role = role
        self.partnerID = partnerID
        self.partner = partner
        self.projectID = projectID
        self.project = project
        self.hostID = hostID
    }
}

/// Which jobs a principal may see: all, one partner's, or one project's.
package enum JobScope: Sendable, Hashable {
    case all
    case partner(Int64)
    case project(Int64)
    /// Agents and anything else see no jobs through the user routes.
    case none

    package init(_ principal: Principal) {
        switch principal.role {
        case .admin, .auditor: self = .all
        case .partnerAdmin: self = principal.partnerID.map(JobScope.partner) ?? .none
        case .researcher: self = principal.projectID.map(JobScope.project) ?? .none
        case .agent: self = .none
        }
    }
}

/// The PostgreSQL store: every read and write of Comity's state goes through here.
package struct Store: Sendable {
    package struct Configuration: Sendable {
        /// How long an attempt's lease lasts without renewal.
        package var leaseSeconds: Int = 30
        /// How often agents heartbeat (told to them at enrollment).
        package var heartbeatSeconds: Int = 5
        /// A host that has not heartbeat for this long is `down` and gets no new work.
        package var hostTimeoutSeconds: Int = 30
        /// Bytes of output kept per job; later output is dropped and the job marked truncated.
        package var logLimitBytes: Int64 = 8 << 20
        /// How many queued jobs one scheduling pass examines and places at most (the bounded head of the queue).
        /// 1,000 since round 6 (2,000 before): a pass at 100,000 queued × 10,000 hosts takes about 45–55 ms instead
        /// of 90–120, placing as many jobs a second; a job submitted during a burst waits for a shorter pass, and
        /// passes run back to back while heads come back full (docs/performance.md).
        package var passHeadLimit: Int = 1_000
        /// Contribution and usage lose half their weight in this long (fair sharing's memory).
        package var shareHalfLifeSeconds: Double = 7 * 86_400
        /// How often contribution and usage are accounted.
        package var accountingIntervalSeconds: Int = 30
        /// A job preempted by a reclaim is not preempted again within this window (no ping-pong).
        package var preemptionCooldownSeconds: Int = 900
        /// Reclaims a pass may plan (each preempts the fewest guests needed for one waiting job).
        package var reclaimsPerPass: Int = 4

        package init() {}
    }

    package let client: PostgresClient
    package let configuration: Configuration
    package let logger: Logger
    /// Decoded GPU lists of hosts, so a scheduling pass does not decode 10k JSON documents every time.
    let gpuCache = GPUCache()
    /// The scheduling pass's hosts, kept while they do not change.
    let poolCache = PoolCache()
    /// The rules as last loaded (see ``policyContext(on:)``).
    let policyCache = PolicyCache()
    /// Fair sharing's inputs as last loaded (see ``sharingContext(on:knownGeneration:)``).
    let sharingCache = SharingCache()
    /// Notifications of committed changes (see ``NoticeSender``).
    let notices: NoticeSender
    /// Agent starts, written in batches (see ``start(attempt:host:)``).
    let starts: Batcher<AttemptKey, Int64?>
    /// Agent end reports, written in batches (see ``finish(attempt:host:_:)``).
    let ends: Batcher<EndRequest, EndResult>
    /// The tag of this store's notifications (set when they are also delivered inside the process).
    package var noticeOrigin: String? { notices.origin }

    /// - Parameter localNotices: delivers this store's notifications inside the process at once (the server's own
    ///   waiters), besides through PostgreSQL.
    package init(
        client: PostgresClient, configuration: Configuration = .init(), logger: Logger,
        localNotices: (@Sendable (NoticeSender.Notice) -> Void)? = nil
    ) {
        self.client = client
        self.configuration = configuration
        self.logger = logger
        self.notices = NoticeSender(client: client, logger: logger, local: localNotices)
        let lease = Double(configuration.leaseSeconds)
        self.starts = Batcher(limit: 500) { batch in try await Store.start(batch, client: client, leaseSeconds: lease, logger: logger) }
        self.ends = Batcher(limit: 500) { batch in try await Store.end(batch, client: client, logger: logger) }
    }

    /// Channels of `LISTEN/NOTIFY`.
    package enum Channel {
        /// Payload: comma-separated host ids that have new assignments or attempts to stop.
        package static let assign = "comity_assign"
        /// Payload: a job id whose state or log changed.
        package static let job = "comity_job"
        /// Payload: empty; something the scheduler should look at changed (submission, capacity freed, host joined).
        package static let scheduler = "comity_sched"
    }

    // MARK: Tokens

    /// A new random secret with a readable prefix; only its hash is stored.
    package static func newToken(prefix: String) -> String {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<32).map { _ in UInt8.random(in: 0...255, using: &generator) }
        let text = Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
        return "\(prefix)_\(text)"
    }

    package static func hash(token: String) -> ByteBuffer { ByteBuffer(bytes: Array(SHA256.hash(data: Data(token.utf8)))) }

    /// The principal behind a bearer token, or `nil` when the token is unknown or revoked.
    package func principal(forToken token: String) async throws -> Principal? {
        let rows = try await client.query(
            """
            select p.id, p.name, p.role, p.partner_id, pa.name, p.project_id, pr.name, p.host_id
            from api_tokens t
            join principals p on p.id = t.principal_id
            left join partners pa on pa.id = coalesce(p.partner_id, (select partner_id from projects where id = p.project_id))
            left join projects pr on pr.id = p.project_id
            where t.token_hash = \(Self.hash(token: token)) and t.revoked_at is null
            """, logger: logger)
        for try await (id, name, role, partnerID, partner, projectID, project, hostID) in rows.decode(
            (Int64, String, String, Int64?, String?, Int64?, String?, Int64?).self)
        {
            guard let role = Role(rawValue: role) else { return nil }
            return Principal(
                id: id, name: name, role: role, partnerID: partnerID, partner: partner, projectID: projectID, project: project,
                hostID: hostID)
        }
        return nil
    }

    /// Creates a principal and a token for it in one transaction; returns the secret (shown once).
    package func createPrincipal(
        name: String, role: Role, partnerID: Int64?, projectID: Int64?, hostID: Int64?, on connection: PostgresConnection
    ) async throws -> (principal: Int64, tokenID: Int64, token: String) {
        let principalID = try await connection.query(
            """
            insert into principals (name, role, partner_id, project_id, host_id)
            values (\(name), \(role.rawValue), \(partnerID), \(projectID), \(hostID)) returning id
            """, logger: logger
        ).decode(Int64.self).collect().first!
        let token = Self.newToken(prefix: role == .agent ? "cma" : "cmt")
        let tokenID = try await connection.query(
            "insert into api_tokens (principal_id, token_hash) values (\(principalID), \(Self.hash(token: token))) returning id",
            logger: logger
        ).decode(Int64.self).collect().first!
        return (principalID, tokenID, token)
    }

    /// Creates the first admin and returns its token, unless an admin exists already (then `nil`).
    ///
    /// Serialized by a transaction-scoped advisory lock so that replicas starting together create one admin.
    package func bootstrapAdmin() async throws -> String? {
        try await transaction { connection in
            try await connection.query("select pg_advisory_xact_lock(\(Int64(0x636f_6d69_7479_02)))", logger: logger)
            let existing = try await connection.query("select count(*) from principals where role = 'admin'", logger: logger)
                .decode(Int64.self).collect().first ?? 0
            guard existing == 0 else { return nil }
            return try await createPrincipal(name: "admin", role: .admin, partnerID: nil, projectID: nil, hostID: nil, on: connection).token
        }
    }

    /// Whether the database answers.
    package func ping() async throws {
        try await client.query("select 1", logger: logger)
    }
}

extension AsyncSequence {
    package func collect() async throws -> [Element] {
        var items: [Element] = []
        for try await item in self { items.append(item) }
        return items
    }
}

extension PostgresClient {
    /// Runs `body` with a client whose pool runs for exactly as long as `body` (for one-shot commands).
    @discardableResult
    package static func with<T: Sendable>(
        _ configuration: PostgresClient.Configuration, logger: Logger, _ body: @Sendable (PostgresClient) async throws -> T
    ) async throws -> T {
        // The body may ask for a connection before `run()` is scheduled; the pool waits for it, so its warning
        // about that is noise here.
        var quiet = logger
        quiet.logLevel = max(logger.logLevel, .error)
        let client = PostgresClient(configuration: configuration, backgroundLogger: quiet)
        return try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask {
                await client.run()
                return nil
            }
            defer { group.cancelAll() }
            return try await body(client)
        }
    }
}

extension Store {
    /// Runs `body` again (up to three times in all) when PostgreSQL chose it as a deadlock victim. A transaction's
    /// error surfaces as its cause, not PostgresNIO's wrapper.
    static func retryingDeadlocks<T>(logger: Logger, _ body: () async throws -> sending T) async throws -> sending T {
        var attempt = 0
        while true {
            attempt += 1
            do {
                return try await body()
            } catch {
                let cause = (error as? PostgresTransactionError)?.closureError ?? error
                if attempt < 3, let failure = cause as? PSQLError, failure.serverInfo?[.sqlState] == "40P01" {
                    logger.warning("deadlock victim; running it again", metadata: ["attempt": "\(attempt)"])
                    continue
                }
                throw cause
            }
        }
    }

    /// Runs `body` in a transaction; when `body` throws, the transaction rolls back and its error (not PostgresNIO's
    /// wrapper) is what the caller sees.
    ///
    /// A transaction PostgreSQL chose as a deadlock victim (40P01) is run again, up to three times: lock order is
    /// kept consistent (the rules' row, then the rows changed), but a victim must never surface as a failure.
    package func transaction<T: Sendable>(_ body: (PostgresConnection) async throws -> sending T) async throws -> sending T {
        try await Self.retryingDeadlocks(logger: logger) { try await client.withTransaction(logger: logger, body) }
    }
}

/// Remembers each host's decoded GPU list together with the JSON text it came from; a changed text is decoded anew.
final class GPUCache: Sendable {
    private let entries = Mutex<[Int64: (text: String, gpus: [GPU])]>([:])

    func gpus(host: Int64, json: String) throws -> [GPU] {
        if let entry = entries.withLock({ $0[host] }), entry.text == json { return entry.gpus }
        let gpus = try WireJSON.sharedDecoder.decode([GPU].self, from: Data(json.utf8))
        entries.withLock { $0[host] = (json, gpus) }
        return gpus
    }
}
