import ComityAPI
import ComityCore
import ComityStore
import Foundation
import Hummingbird

/// Federation data (jurisdictions, regions, partners, projects), tokens and hosts.
extension Routes {
    func addAdminRoutes(to router: Router<AppContext>) {
        let human: [Role] = [.admin, .auditor, .partnerAdmin, .researcher]

        router.get("/v1/whoami") { _, context -> Response in
            let principal = try context.requirePrincipal()
            return try json(
                WhoAmI(principal: principal.name, role: principal.role, partner: principal.partner, project: principal.project, hostId: principal.hostID))
        }

        router.post("/v1/jurisdictions") { request, context -> Response in
            _ = try context.require(.admin, action: "add jurisdictions")
            let body = try await request.decodeBody(Jurisdiction.self, context: context)
            try Self.check(code: body.code, field: "code")
            if let parent = body.within { try Self.check(code: parent, field: "within") }
            return try json(try await store.addJurisdiction(body), status: .created)
        }
        router.get("/v1/jurisdictions") { _, context -> Response in
            _ = try context.require(human, action: "list jurisdictions")
            return try json(try await store.jurisdictions())
        }

        router.post("/v1/regions") { request, context -> Response in
            _ = try context.require(.admin, action: "add regions")
            let body = try await request.decodeBody(Region.self, context: context)
            try Self.check(name: body.name, field: "name")
            return try json(try await store.addRegion(body), status: .created)
        }
        router.get("/v1/regions") { _, context -> Response in
            _ = try context.require(human, action: "list regions")
            return try json(try await store.regions())
        }

        router.post("/v1/partners") { request, context -> Response in
            _ = try context.require(.admin, action: "add partners")
            let body = try await request.decodeBody(Partner.self, context: context)
            try Self.check(name: body.name, field: "name")
            return try json(try await store.addPartner(body), status: .created)
        }
        router.get("/v1/partners") { _, context -> Response in
            _ = try context.require(human, action: "list partners")
            return try json(try await store.partners())
        }

        router.post("/v1/projects") { request, context -> Response in
            let principal = try context.require(.admin, .partnerAdmin, action: "add projects")
            let body = try await request.decodeBody(Project.self, context: context)
            try Self.check(name: body.name, field: "name")
            if let purpose = body.purpose { try Self.check(name: purpose, field: "purpose") }
            if principal.role == .partnerAdmin, principal.partner != body.partner {
                throw APIError.forbidden("a partner admin may add projects to its own partner (\(principal.partner ?? "?")) only")
            }
            return try json(try await store.addProject(body), status: .created)
        }
        router.get("/v1/projects") { _, context -> Response in
            let principal = try context.require(human, action: "list projects")
            return try json(try await store.projects(scope: JobScope(principal)))
        }

        router.post("/v1/tokens") { request, context -> Response in
            let principal = try context.require(.admin, .partnerAdmin, action: "create tokens")
            let body = try await request.decodeBody(CreateTokenRequest.self, context: context)
            return try json(try await store.createToken(body, by: principal), status: .created)
        }

        router.delete("/v1/tokens/:id") { _, context -> Response in
            let principal = try context.require(.admin, .partnerAdmin, action: "revoke tokens")
            let id = try context.parameters.require("id", as: Int64.self)
            guard let owner = try await store.revokeToken(id, by: principal) else { throw APIError.notFound("token \(id)") }
            return try json(RevokedToken(id: id, principal: owner))
        }

        router.post("/v1/join-tokens") { request, context -> Response in
            let principal = try context.require(.admin, .partnerAdmin, action: "create join tokens")
            let body = try await request.decodeBody(CreateJoinTokenRequest.self, context: context)
            return try json(try await store.createJoinToken(body, by: principal), status: .created)
        }

        router.get("/v1/hosts") { _, context -> Response in
            _ = try context.require(human, action: "list hosts")
            return try json(HostList(hosts: try await store.hosts()))
        }
    }

    static func check(code: String, field: String) throws {
        guard code.range(of: #"^[A-Z][A-Z0-9-]{1,15}$"#, options: .regularExpression) != nil else {
            throw APIError.invalid(field: field, "expected an upper-case code such as KE, EU or DE-BY, got \"\(code)\"")
        }
    }

    static func check(name: String, field: String) throws {
        guard name.range(of: #"^[a-z0-9][a-z0-9._-]{0,62}$"#, options: .regularExpression) != nil else {
            throw APIError.invalid(field: field, "expected lower-case letters, digits, '.', '_' or '-' (at most 63), got \"\(name)\"")
        }
    }
}
