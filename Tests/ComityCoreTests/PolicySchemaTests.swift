import Foundation
import Testing

@testable import ComityCore

/// `docs/policy-schema.json`, the published JSON Schema of rule documents, must describe exactly what
/// `PolicyDocument.parse` reads: the same fields per kind, the same enumerations, and patterns that accept what the
/// parser accepts. The example documents in `docs/examples/policies/` use only their kind's fields.
@Suite("Policy schema")
struct PolicySchemaTests {
    static let repositoryRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent()  // ComityCoreTests
        .deletingLastPathComponent()  // Tests
        .deletingLastPathComponent()

    static func schema() throws -> JSONValue {
        let data = try Data(contentsOf: repositoryRoot.appendingPathComponent("docs/policy-schema.json"))
        return try JSONDecoder().decode(JSONValue.self, from: data)
    }

    // MARK: Reading the schema

    static func member(_ value: JSONValue?, _ key: String) -> JSONValue? {
        guard case .object(let object)? = value else { return nil }
        return object[key]
    }

    static func items(_ value: JSONValue?) -> [JSONValue] {
        guard case .array(let items)? = value else { return [] }
        return items
    }

    static func text(_ value: JSONValue?) -> String? {
        guard case .string(let text)? = value else { return nil }
        return text
    }

    static func keys(_ value: JSONValue?) -> Set<String> {
        guard case .object(let object)? = value else { return [] }
        return Set(object.keys)
    }

    /// Follows a local `$ref` (`#/$defs/name`); a node without one is returned as it is.
    static func resolve(_ value: JSONValue?, in root: JSONValue) -> JSONValue? {
        guard let reference = text(member(value, "$ref")) else { return value }
        guard reference.hasPrefix("#/") else { return nil }
        var node: JSONValue? = root
        for token in reference.dropFirst(2).split(separator: "/") { node = member(node, String(token)) }
        return node
    }

    /// The schema's `oneOf` branches by the constant of their `kind` property.
    static func branches(_ root: JSONValue) -> [String: JSONValue] {
        var result: [String: JSONValue] = [:]
        for branch in items(member(root, "oneOf")) {
            let resolved = resolve(branch, in: root)
            if let kind = text(member(member(member(resolved, "properties"), "kind"), "const")) { result[kind] = resolved }
        }
        return result
    }

    static func pattern(_ name: String) throws -> String {
        let root = try schema()
        return try #require(text(member(member(member(root, "$defs"), name), "pattern")), "no pattern in $defs/\(name)")
    }

    static func matches(_ text: String, _ pattern: String) -> Bool {
        text.range(of: pattern, options: .regularExpression) != nil
    }

    static func accepted(_ document: JSONValue) -> Bool {
        (try? PolicyDocument.parse(document).get()) != nil
    }

    // MARK: Fields

    @Test("one closed branch per kind, with exactly the parser's fields")
    func branchesMatchTheParser() throws {
        let root = try Self.schema()
        #expect(Self.text(Self.member(root, "$schema")) == "https://json-schema.org/draft/2020-12/schema")
        #expect(Self.items(Self.member(root, "oneOf")).count == PolicyKind.allCases.count, "one oneOf branch per kind")
        let branches = Self.branches(root)
        #expect(Set(branches.keys) == Set(PolicyKind.allCases.map(\.rawValue)))
        for kind in PolicyKind.allCases {
            let branch = try #require(branches[kind.rawValue], "no branch for \(kind.rawValue)")
            #expect(Self.member(branch, "additionalProperties") == JSONValue.bool(false), "\(kind.rawValue): additionalProperties must be false")
            let parser = Set(try #require(PolicyDocument.fields[kind]))
            let schema = Self.keys(Self.member(branch, "properties"))
            #expect(
                schema == parser,
                "\(kind.rawValue): only in the schema \(schema.subtracting(parser).sorted()), only in the parser \(parser.subtracting(schema).sorted())")
        }
    }

    @Test("rule items list the parser's match fields")
    func ruleItems() throws {
        let root = try Self.schema()
        let branches = Self.branches(root)
        func itemProperties(_ kind: PolicyKind, _ field: String) -> Set<String> {
            let list = Self.resolve(Self.member(Self.member(branches[kind.rawValue], "properties"), field), in: root)
            let item = Self.resolve(Self.member(list, "items"), in: root)
            #expect(Self.member(item, "additionalProperties") == JSONValue.bool(false), "\(kind.rawValue).\(field): additionalProperties must be false")
            return Self.keys(Self.member(item, "properties"))
        }
        let match = Set(PolicyDocument.matchFields)
        #expect(itemProperties(.donorPolicy, "permit") == match.union(["id", "windows", "must_finish_within_window"]))
        #expect(itemProperties(.donorPolicy, "forbid") == match.union(["id"]))
        #expect(itemProperties(.federation, "forbid") == match.union(["id", "jurisdictions"]))
    }

    @Test("enumerations are the core's")
    func enumerations() throws {
        let defs = Self.member(try Self.schema(), "$defs")
        func values(_ node: JSONValue?) -> [String] { Self.items(Self.member(node, "enum")).compactMap { Self.text($0) } }
        #expect(values(Self.member(defs, "dataClass")) == DataClass.allCases.map(\.rawValue))
        #expect(values(Self.member(defs, "weekday")) == Weekday.allCases.map(\.rawValue))
        #expect(values(Self.member(Self.member(defs, "jobKinds"), "items")) == JobKind.allCases.map(\.rawValue))
    }

    // MARK: Patterns

    @Test(
        "the set name pattern accepts what the parser accepts",
        arguments: ["EEA", "GDPR_ADEQUATE", "CTRL-A", "KE", "E1", "E", "eea", "Eea", "1EA", "_EA", "E A", "EÉ", String(repeating: "A", count: 32), String(repeating: "A", count: 33)])
    func setName(name: String) throws {
        #expect(Self.matches(name, try Self.pattern("setName")) == PolicyDocument.isSetName(name), "\(name)")
    }

    @Test(
        "the jurisdiction reference pattern accepts what the parser accepts",
        arguments: ["KE", "DE-BY", "EEA", "GDPR_ADEQUATE", "12", "-K", "K_", "_K", "K", "ke", "K E", ""])
    func regionRef(ref: String) throws {
        let document = JSONValue.object(["kind": .string("jurisdiction-set"), "name": .string("TEST"), "members": .array([.string(ref)])])
        #expect(Self.matches(ref, try Self.pattern("regionRef")) == Self.accepted(document), "\(ref)")
    }

    @Test(
        "the clock pattern accepts what the parser accepts",
        arguments: ["18:00", "06:00", "6:00", "00:00", "23:59", "24:00", "24:01", "25:00", "18:60", "18:0", "1800", "18:00:00", ""])
    func clock(time: String) throws {
        let window = JSONValue.object(["from": .string(time), "to": .string("06:00")])
        let document = JSONValue.object([
            "kind": .string("donor-policy"), "name": .string("uon"), "permit": .array([.object(["windows": .array([window])])]),
        ])
        #expect(Self.matches(time, try Self.pattern("clock")) == Self.accepted(document), "\(time)")
    }

    @Test(
        "the duration pattern accepts what the parser accepts",
        arguments: ["10m", "1h30m", "600", "2d", " 15m ", "1h 30m", "10 minutes", "m", "10x", "-5m", ""])
    func duration(text: String) throws {
        let document = JSONValue.object(["kind": .string("donor-policy"), "name": .string("uon"), "grace": .string(text)])
        #expect(Self.matches(text, try Self.pattern("duration")) == Self.accepted(document), "\(text)")
    }

    // MARK: Examples

    /// There is no YAML parser in the core's tests: the top-level keys of an example are the lines that start with a
    /// letter in column 0 and have a colon. (Validation against the schema itself is done with a JSON Schema tool.)
    @Test(
        "the example documents use only their kind's fields",
        arguments: ["eac-set", "ke-health", "uon-donor", "federation", "derived-model"])
    func example(name: String) throws {
        let url = Self.repositoryRoot.appendingPathComponent("docs/examples/policies/\(name).yaml")
        let text = try String(contentsOf: url, encoding: .utf8)
        var values: [String: String] = [:]
        for line in text.split(separator: "\n") {
            guard let first = line.first, first.isLetter, let colon = line.firstIndex(of: ":") else { continue }
            let key = String(line[..<colon])
            #expect(values[key] == nil, "\(name): \(key) twice")
            values[key] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        let kind = try #require(values["kind"].flatMap(PolicyKind.init(rawValue:)), "\(name): no known kind")
        let allowed = Set(try #require(PolicyDocument.fields[kind]))
        let keys = Set(values.keys)
        #expect(keys.isSubset(of: allowed), "\(name): fields a \(kind.rawValue) does not have: \(keys.subtracting(allowed).sorted())")
        #expect(values["name"].map { !$0.isEmpty } == true, "\(name): no name")
    }
}
