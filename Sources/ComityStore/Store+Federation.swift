import ComityAPI
import ComityCore
import Foundation
import Logging
import PostgresNIO

/// Jurisdictions, regions, partners, projects and tokens.
extension Store {
    package func addJurisdiction(_ jurisdiction: Jurisdiction) async throws -> Jurisdiction {
        try await transaction { connection in
            if let parent = jurisdiction.within {
                try await requireJurisdiction(parent, field: "within", on: connection)
            }
            try await insertUnique(
                "jurisdiction \(jurisdiction.code)", field: "code",
                "insert into jurisdictions (code, parent) values (\(jurisdiction.code), \(jurisdiction.within))", on: connection)
            return jurisdiction
        }
    }

    package func jurisdictions() async throws -> [Jurisdiction] {
        try await client.query("select code, parent from jurisdictions order by code", logger: logger)
            .decode((String, String?).self).collect().map { Jurisdiction(code: $0.0, within: $0.1) }
    }

    package func addRegion(_ region: Region) async throws -> Region {
        try await transaction { connection in
            try await requireJurisdiction(region.jurisdiction, field: "jurisdiction", on: connection)
            try await insertUnique(
                "region \(region.name)", field: "name",
                "insert into regions (name, jurisdiction) values (\(region.name), \(region.jurisdiction))", on: connection)
            return region
        }
    }

    package func regions() async throws -> [Region] {
        try await client.query("select name, jurisdiction from regions order by name", logger: logger)
            .decode((String, String).self).collect().map { Region(name: $0.0, jurisdiction: $0.1) }
    }

    package func addPartner(_ partner: Partner) async throws -> Partner {
        try await transaction { connection in
            try await requireJurisdiction(partner.jurisdiction, field: "jurisdiction", on: connection)
            try await insertUnique(
                "partner \(partner.name)", field: "name",
                "insert into partners (name, jurisdiction, commercial) values (\(partner.name), \(partner.jurisdiction), \(partner.commercial ?? false))",
                on: connection)
            return partner
        }
    }

    package func partners() async throws -> [Partner] {
        try await client.query("select name, jurisdiction, commercial from partners order by name", logger: logger)
            .decode((String, String, Bool).self).collect().map { (row: (String, String, Bool)) in
                Partner(name: row.0, jurisdiction: row.1, commercial: row.2)
            }
    }

    package func addProject(_ project: Project) async throws -> Project {
        if let shares = project.shares, !(1...10_000).contains(shares) {
            throw StoreError(.invalid, "expected a whole number of shares from 1 to 10000, got \(shares)", field: "shares")
        }
        return try await transaction { connection in
            let partnerID = try await partnerID(project.partner, field: "partner", on: connection)
            try await insertUnique(
                "project \(project.name)", field: "name",
                """
                insert into projects (name, partner_id, purpose, commercial, shares)
                values (\(project.name), \(partnerID), \(project.purpose), \(project.commercial ?? false), \(Int32(project.shares ?? 1)))
                """, on: connection)
            return project
        }
    }

    /// Projects visible in `scope`.
    package func projects(scope: JobScope) async throws -> [Project] {
        let (partner, project) = scope.filters
        return try await client.query(
            """
            select pr.name, pa.name, pr.purpose, pr.commercial, pr.shares from projects pr join partners pa on pa.id = pr.partner_id
            where (\(partner)::bigint is null or pr.partner_id = \(partner))
              and (\(project)::bigint is null or pr.id = \(project))
            order by pr.name
            """, logger: logger
        ).decode((String, String, String?, Bool, Int32).self).collect().map { (row: (String, String, String?, Bool, Int32)) in
            Project(name: row.0, partner: row.1, purpose: row.2, commercial: row.3, shares: Int(row.4))
        }
    }

    /// The id and partner of a project, or a not-found error naming `field`.
    package func projectIDs(_ name: String, field: String) async throws -> (project: Int64, partner: Int64) {
        let rows = try await client.query("select id, partner_id from projects where name = \(name)", logger: logger)
            .decode((Int64, Int64).self).collect()
        guard let row = rows.first else {
            let names = try await client.query("select name from projects", logger: logger).decode(String.self).collect()
            throw StoreError(.invalid, "unknown project \"\(name)\"\(Self.hint(name, names))", field: field)
        }
        return row
    }

    package func partnerID(_ name: String, field: String, on connection: PostgresConnection) async throws -> Int64 {
        if let id = try await connection.query("select id from partners where name = \(name)", logger: logger)
            .decode(Int64.self).collect().first
        {
            return id
        }
        let names = try await connection.query("select name from partners", logger: logger).decode(String.self).collect()
        throw StoreError(.invalid, "unknown partner \"\(name)\"\(Self.hint(name, names))", field: field)
    }

    func requireJurisdiction(_ code: String, field: String, on connection: PostgresConnection) async throws {
        let codes = try await connection.query("select code from jurisdictions", logger: logger).decode(String.self).collect()
        guard codes.contains(code) else {
            throw StoreError(.invalid, "unknown jurisdiction \"\(code)\"\(Self.hint(code, codes))", field: field)
        }
    }

    func requireRegion(_ name: String, field: String, on connection: PostgresConnection) async throws {
        let names = try await connection.query("select name from regions", logger: logger).decode(String.self).collect()
        guard names.contains(name) else {
            throw StoreError(.invalid, "unknown region \"\(name)\"\(Self.hint(name, names))", field: field)
        }
    }

    static func hint(_ name: String, _ candidates: [String]) -> String {
        Suggestion.closest(to: name, among: candidates).map { "; did you mean \"\($0)\"?" } ?? ""
    }

    /// Runs an insert and turns a unique or check violation into a clear error naming `field`.
    func insertUnique(_ what: String, field: String, _ query: PostgresQuery, on connection: PostgresConnection) async throws {
        do {
            try await connection.query(query, logger: logger)
        } catch let error as PSQLError {
            switch error.serverInfo?[.sqlState] {
            case "23505": throw StoreError(.conflict, "\(what) exists already", field: field)
            case "23514": throw StoreError(.invalid, "\(what): the name does not have the expected form", field: field)
            default: throw error
            }
        }
    }

    // MARK: Tokens

    /// Creates a token for a new principal with `role`, scoped as the request says.
    package func createToken(_ request: CreateTokenRequest, by creator: Principal) async throws -> CreatedToken {
        try await transaction { connection in
            var partnerID: Int64?
            var projectID: Int64?
            var partnerName = request.partner
            switch request.role {
            case .admin, .auditor:
                if request.partner != nil || request.project != nil {
                    throw StoreError(.invalid, "\(request.role.rawValue) tokens are not scoped; remove partner and project", field: "role")
                }
            case .partnerAdmin:
                guard let partner = request.partner else {
                    throw StoreError(.invalid, "required for role partner-admin", field: "partner")
                }
                partnerID = try await self.partnerID(partner, field: "partner", on: connection)
            case .researcher:
                guard let project = request.project else {
                    throw StoreError(.invalid, "required for role researcher", field: "project")
                }
                let row = try await connection.query(
                    "select pr.id, pr.partner_id, pa.name from projects pr join partners pa on pa.id = pr.partner_id where pr.name = \(project)",
                    logger: logger
                ).decode((Int64, Int64, String).self).collect().first
                guard let row else {
                    let names = try await connection.query("select name from projects", logger: logger).decode(String.self).collect()
                    throw StoreError(.invalid, "unknown project \"\(project)\"\(Self.hint(project, names))", field: "project")
                }
                if let partner = request.partner, partner != row.2 {
                    throw StoreError(.invalid, "project \(project) belongs to partner \(row.2), not \(partner)", field: "partner")
                }
                projectID = row.0
                partnerName = row.2
                if creator.role == .partnerAdmin, creator.partnerID != row.1 {
                    throw StoreError(.forbidden, "project \(project) is not one of partner \(creator.partner ?? "?")'s projects", field: "project")
                }
            case .agent:
                throw StoreError(.invalid, "agent credentials come from enrollment with a join token", field: "role")
            }
            if creator.role == .partnerAdmin, request.role != .researcher {
                throw StoreError(.forbidden, "a partner admin may create researcher tokens only", field: "role")
            }
            let name = request.name ?? "\(request.role.rawValue)-\(request.project ?? request.partner ?? "global")"
            let created = try await createPrincipal(
                name: name, role: request.role, partnerID: partnerID, projectID: projectID, hostID: nil, on: connection)
            try await audit(
                "token-created", actor: creator.name, partners: partnerName.map { [$0] } ?? [],
                body: .object([
                    "token_id": .number(Double(created.tokenID)), "principal": .string(name), "role": .string(request.role.rawValue),
                    "project": request.project.map(JSONValue.string) ?? .null,
                ]),
                on: connection)
            return CreatedToken(id: created.tokenID, role: request.role, partner: partnerName, project: request.project, token: created.token)
        }
    }

    package func createJoinToken(_ request: CreateJoinTokenRequest, by creator: Principal) async throws -> CreatedJoinToken {
        try await transaction { connection in
            let partnerID = try await partnerID(request.partner, field: "partner", on: connection)
            if creator.role == .partnerAdmin, creator.partnerID != partnerID {
                throw StoreError(.forbidden, "a partner admin may create join tokens for its own partner only", field: "partner")
            }
            try await requireRegion(request.region, field: "region", on: connection)
            let ttl = request.ttlSeconds ?? 86_400
            guard (60...(30 * 86_400)).contains(ttl) else {
                throw StoreError(.invalid, "expected 60 seconds to 30 days, got \(ttl)", field: "ttl_seconds")
            }
            let token = Self.newToken(prefix: "cmj")
            let row = try await connection.query(
                """
                insert into join_tokens (token_hash, partner_id, region, created_by, expires_at)
                values (\(Self.hash(token: token)), \(partnerID), \(request.region), \(creator.id), now() + make_interval(secs => \(Double(ttl))))
                returning id, expires_at
                """, logger: logger
            ).decode((Int64, Date).self).collect().first!
            try await audit(
                "join-token-created", actor: creator.name, partners: [request.partner], region: request.region,
                body: .object(["join_token_id": .number(Double(row.0)), "expires_at": .string(WireJSON.format(row.1))]), on: connection)
            return CreatedJoinToken(id: row.0, partner: request.partner, region: request.region, expiresAt: row.1, token: token)
        }
    }
}

extension JobScope {
    /// (partner id, project id) filters for SQL; `nil` means unrestricted. `.none` matches nothing (id -1).
    var filters: (Int64?, Int64?) {
        switch self {
        case .all: (nil, nil)
        case .partner(let id): (id, nil)
        case .project(let id): (nil, id)
        case .none: (-1, -1)
        }
    }
}

extension Store {
    /// Revokes a token (effective within the servers' token cache time, 10 s). A partner admin may revoke the tokens
    /// of its own partner's principals (its researchers', its own) only; agents' credentials are revoked by admins.
    ///
    /// - Returns: the principal whose token it was, or `nil` when no such token is visible to `revoker`.
    package func revokeToken(_ id: Int64, by revoker: Principal) async throws -> String? {
        try await transaction { connection in
            let rows = try await connection.query(
                """
                select p.name, p.role, coalesce(p.partner_id, pr.partner_id, h.partner_id), t.revoked_at is not null, pa.name
                from api_tokens t join principals p on p.id = t.principal_id
                left join projects pr on pr.id = p.project_id left join hosts h on h.id = p.host_id
                left join partners pa on pa.id = coalesce(p.partner_id, pr.partner_id, h.partner_id)
                where t.id = \(id)
                for no key update of t
                """, logger: logger
            ).decode((String, String, Int64?, Bool, String?).self).collect()
            guard let (name, role, partnerID, revoked, partner) = rows.first else { return nil }
            if revoker.role == .partnerAdmin, partnerID != revoker.partnerID || role == Role.agent.rawValue || role == Role.admin.rawValue {
                return nil  // not visible: indistinguishable from a missing token
            }
            if revoked { return name }
            try await connection.query("update api_tokens set revoked_at = now() where id = \(id)", logger: logger)
            try await audit(
                "token-revoked", actor: revoker.name, partners: partner.map { [$0] } ?? [],
                body: .object(["token_id": .number(Double(id)), "principal": .string(name), "role": .string(role)]), on: connection)
            return name
        }
    }
}
