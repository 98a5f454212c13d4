import ComityAPI
import ComityCore
import ComityStore
import Foundation
import Hummingbird

/// Services: list, show, scale, endpoints. A service is submitted as a `kind: inference` job file (`POST /v1/jobs`).
/// `{name}` is the service's name, or `project:name` where several projects in the caller's view use the name. A
/// service outside the caller's scope is answered 404, exactly as a missing one.
extension Routes {
    func addServiceRoutes(to router: Router<AppContext>) {
        let readers: [Role] = [.admin, .auditor, .partnerAdmin, .researcher]

        router.get("/v1/services") { request, context -> Response in
            let principal = try context.require(readers, action: "list services")
            let project = request.uri.queryParameters.get("project").flatMap { $0.isEmpty ? nil : String($0) }
            return try json(ServiceList(services: try await store.services(scope: JobScope(principal), project: project)))
        }

        router.get("/v1/services/:name") { _, context -> Response in
            let principal = try context.require(readers, action: "read services")
            let name = try Self.pathText(context.parameters.require("name"))
            guard let service = try await store.service(name, scope: JobScope(principal)) else { throw APIError.notFound("service \(name)") }
            return try json(service)
        }

        router.patch("/v1/services/:name") { request, context -> Response in
            let principal = try context.require(.admin, .partnerAdmin, .researcher, action: "scale services")
            let name = try Self.pathText(context.parameters.require("name"))
            let body = try await request.decodeBody(ScaleRequest.self, context: context)
            guard let service = try await store.scaleService(name, replicas: body.replicas, scope: JobScope(principal), by: principal) else {
                throw APIError.notFound("service \(name)")
            }
            return try json(service)
        }

        router.get("/v1/services/:name/endpoints") { _, context -> Response in
            let principal = try context.require(readers, action: "read endpoints")
            let name = try Self.pathText(context.parameters.require("name"))
            guard let list = try await store.endpoints(name, scope: JobScope(principal)) else { throw APIError.notFound("service \(name)") }
            return try json(list)
        }

        addGatewayRoutes(to: router)
    }

    /// `POST /v1/jobs` with `kind: inference`: the service and its replica jobs; answers the first replica's job.
    func submitService(_ spec: JobSpec, array: String?, by principal: Principal) async throws -> Response {
        guard array == nil else {
            throw APIError.invalid(field: "array", "a service runs copies through service.replicas, not as an array job")
        }
        let created = try await store.submitService(spec, by: principal)
        guard let first = created.jobs.first, let job = try await store.job(first, scope: .all) else {
            throw APIError.notFound("service \(spec.name)")
        }
        return try json(job, status: .created)
    }
}
