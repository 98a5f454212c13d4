import ComityStore
import Foundation
import Hummingbird
import Logging
import PostgresNIO
import Testing
import Yams

@testable import ComityServer

/// `docs/openapi.yaml` must describe exactly the routes the server serves, and be complete enough to generate a client.
@Suite("OpenAPI contract")
struct OpenAPIContractTests {
    static let repositoryRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent()  // ComityServerTests
        .deletingLastPathComponent()  // Tests
        .deletingLastPathComponent()
    static let documentURL = repositoryRoot.appendingPathComponent("docs/openapi.yaml")
    static let methods = ["get", "put", "post", "delete", "options", "head", "patch", "trace"]

    static func document() throws -> Node {
        let text = try String(contentsOf: documentURL, encoding: .utf8)
        return try #require(try Yams.compose(yaml: text), "docs/openapi.yaml is empty")
    }

    /// `/v1/jobs/{id}` and `/v1/jobs/:id` both become `/v1/jobs/:id`; the router's catch-all `**` is the document's
    /// `{path}` (the gateway's rest of the path, one or more segments).
    static func normalize(_ path: String) -> String {
        path.split(separator: "/", omittingEmptySubsequences: false).map { segment -> String in
            if segment == "**" { return ":path" }
            return segment.hasPrefix("{") && segment.hasSuffix("}") ? ":" + segment.dropFirst().dropLast() : String(segment)
        }.joined(separator: "/")
    }

    /// Every operation of the document: (METHOD, path, operation node).
    static func operations(of document: Node) throws -> [(method: String, path: String, operation: Node)] {
        let paths = try #require(document["paths"]?.mapping, "the document has no paths")
        var operations: [(method: String, path: String, operation: Node)] = []
        for (pathNode, item) in paths {
            let path = try #require(pathNode.string)
            let item = try #require(item.mapping, "\(path) is not a mapping")
            for (methodNode, operation) in item {
                guard let method = methodNode.string, methods.contains(method) else { continue }
                operations.append((method.uppercased(), path, operation))
            }
        }
        return operations
    }

    /// The server's router, built exactly as `buildApplication` builds it (the database is never contacted).
    static func serverRoutes() -> Set<String> {
        let client = PostgresClient(
            configuration: .init(host: "127.0.0.1", port: 1, username: "x", password: nil, database: "x", tls: .disable))
        let store = Store(client: client, logger: Logger(label: "openapi-contract"))
        let router = Router(context: AppContext.self)
        Routes(store: store, notifier: Notifier(), registry: nil, audit: .ephemeral()).addRoutes(to: router)
        return Set(router.routes.map { "\($0.method.rawValue) \(normalize($0.path.description))" })
    }

    @Test("the document lists exactly the routes of the server")
    func routesMatch() throws {
        let documented = try Self.operations(of: Self.document()).map { "\($0.method) \(Self.normalize($0.path))" }
        #expect(Set(documented).count == documented.count, "an operation is listed twice")
        let served = Self.serverRoutes()
        let missingInDocument = served.subtracting(documented).sorted()
        let missingInRouter = Set(documented).subtracting(served).sorted()
        #expect(
            missingInDocument.isEmpty,
            "served but missing in docs/openapi.yaml:\n  \(missingInDocument.joined(separator: "\n  "))")
        #expect(
            missingInRouter.isEmpty,
            "in docs/openapi.yaml but not served:\n  \(missingInRouter.joined(separator: "\n  "))")
        #expect(served.count >= 27, "the router has fewer routes than expected: \(served.sorted())")
    }

    @Test("every operation has x-roles and responses, and every $ref resolves")
    func operationsAreComplete() throws {
        let document = try Self.document()
        #expect(document["openapi"]?.string?.hasPrefix("3.1") == true, "expected an OpenAPI 3.1 document")
        let known = Set(["admin", "auditor", "partner-admin", "researcher", "agent"])
        let operations = try Self.operations(of: document)
        #expect(!operations.isEmpty)
        for (method, path, operation) in operations {
            let name = "\(method) \(path)"
            if let roles = operation["x-roles"]?.sequence {
                let names = roles.compactMap(\.string)
                #expect(names.count == roles.count, "\(name): x-roles must be a list of role names")
                let unknown = Set(names).subtracting(known)
                #expect(unknown.isEmpty, "\(name): unknown roles \(unknown.sorted())")
                // An operation open to no role must be open to everyone (no bearer token), and vice versa.
                let open = operation["security"]?.sequence?.isEmpty == true
                #expect(names.isEmpty == open, "\(name): x-roles [] and security [] go together")
            } else {
                Issue.record("\(name): no x-roles list")
            }
            let responses = operation["responses"]?.mapping
            #expect(responses.map { !$0.isEmpty } == true, "\(name): no responses")
            // Path templates and path parameters agree.
            let templated = Set(path.split(separator: "/").filter { $0.hasPrefix("{") }.map { String($0.dropFirst().dropLast()) })
            let declared = Set(
                (operation["parameters"]?.sequence ?? []).compactMap { parameter -> String? in
                    let resolved = Self.resolve(parameter, in: document) ?? parameter
                    return resolved["in"]?.string == "path" ? resolved["name"]?.string : nil
                })
            #expect(templated == declared, "\(name): path parameters \(declared.sorted()) do not match the path")
        }

        var references: [String] = []
        Self.collectReferences(document, into: &references)
        #expect(!references.isEmpty)
        for reference in Set(references).sorted() {
            #expect(reference.hasPrefix("#/"), "only local references are expected, got \(reference)")
            #expect(Self.lookUp(reference, in: document) != nil, "\(reference) does not resolve")
        }
    }

    static func collectReferences(_ node: Node, into references: inout [String]) {
        if let mapping = node.mapping {
            for (key, value) in mapping {
                if key.string == "$ref", let target = value.string {
                    references.append(target)
                } else {
                    collectReferences(value, into: &references)
                }
            }
        } else if let sequence = node.sequence {
            for item in sequence { collectReferences(item, into: &references) }
        }
    }

    /// The node a local JSON pointer (`#/components/schemas/JobView`) names, or `nil`.
    static func lookUp(_ reference: String, in document: Node) -> Node? {
        guard reference.hasPrefix("#/") else { return nil }
        var node: Node? = document
        for token in reference.dropFirst(2).split(separator: "/", omittingEmptySubsequences: false) {
            let key = token.replacingOccurrences(of: "~1", with: "/").replacingOccurrences(of: "~0", with: "~")
            if let sequence = node?.sequence {
                guard let index = Int(key), sequence.indices.contains(index) else { return nil }
                node = sequence[index]
            } else {
                node = node?.mapping?[key]
            }
            if node == nil { return nil }
        }
        return node
    }

    static func resolve(_ node: Node, in document: Node) -> Node? {
        guard let reference = node["$ref"]?.string else { return node }
        return lookUp(reference, in: document)
    }
}
