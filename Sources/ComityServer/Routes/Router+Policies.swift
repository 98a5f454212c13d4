import ComityAPI
import ComityCore
import ComityStore
import Foundation
import Hummingbird

/// The sovereignty engine's routes: rule documents, datasets, and explanations.
extension Routes {
    func addPolicyRoutes(to router: Router<AppContext>) {
        let human: [Role] = [.admin, .auditor, .partnerAdmin, .researcher]

        router.post("/v1/policies") { request, context -> Response in
            let principal = try context.require(.admin, .partnerAdmin, action: "write rules")
            let body = try await request.decodeBody(PolicyApplyRequest.self, context: context)
            let result = try await store.apply(body, by: principal)
            return try json(result, status: result.applied ? .created : .ok)
        }

        // Rules are public inside the federation: everyone may read what constrains their jobs and hosts.
        router.get("/v1/policies") { request, context -> Response in
            _ = try context.require(human, action: "read rules")
            let kind = try Self.policyKind(request.uri.queryParameters.get("kind"))
            return try json(PolicyList(policies: try await store.policies(kind: kind, name: nil, history: false)))
        }

        router.get("/v1/policies/:kind/:name") { _, context -> Response in
            _ = try context.require(human, action: "read rules")
            let kind = try Self.policyKind(context.parameters.get("kind"))
            let name = try context.parameters.require("name")
            let versions = try await store.policies(kind: kind, name: name, history: true)
            guard !versions.isEmpty else { throw APIError.notFound("\(kind?.rawValue ?? "rule")/\(name)") }
            return try json(PolicyList(policies: versions))
        }

        router.get("/v1/datasets") { _, context -> Response in
            _ = try context.require(human, action: "list datasets")
            return try json(DatasetList(datasets: try await store.datasets()))
        }

        router.get("/v1/datasets/:name") { _, context -> Response in
            _ = try context.require(human, action: "read datasets")
            let name = try context.parameters.require("name")
            guard let dataset = try await store.datasets(name: name).first else { throw APIError.notFound("dataset \(name)") }
            return try json(dataset)
        }

        router.get("/v1/jobs/:id/why") { _, context -> Response in
            let principal = try context.require(human, action: "read jobs")
            let id = try context.parameters.require("id", as: Int64.self)
            guard let explanation = try await store.why(job: id, scope: JobScope(principal)) else { throw APIError.notFound("job \(id)") }
            return try json(explanation)
        }

        router.post("/v1/explain") { request, context -> Response in
            let principal = try context.require(human, action: "evaluate jobs")
            let document = try await request.decodeBody(JSONValue.self, context: context)
            switch JobSpec.validate(document) {
            case .success(let spec): return try json(try await store.explain(spec, by: principal))
            case .failure(let failure): throw APIError.invalid(failure)
            }
        }
    }

    static func policyKind(_ text: String?) throws -> PolicyKind? {
        guard let text else { return nil }
        guard let kind = PolicyKind(rawValue: text) else {
            throw APIError.invalid(field: "kind", "expected one of \(PolicyKind.allCases.map(\.rawValue).joined(separator: ", ")), got \"\(text)\"")
        }
        return kind
    }
}
