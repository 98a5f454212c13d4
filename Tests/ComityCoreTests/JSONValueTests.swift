import ComityCore
import Foundation
import Testing

@Suite("JSONValue")
struct JSONValueTests {
    static func decode(_ text: String) throws -> JSONValue {
        try JSONDecoder().decode(JSONValue.self, from: Data(text.utf8))
    }

    static func encode(_ value: JSONValue) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(value), as: UTF8.self)
    }

    @Test(
        "decodes every JSON type",
        arguments: [
            ("null", JSONValue.null),
            ("true", .bool(true)),
            ("false", .bool(false)),
            ("0", .number(0)),
            ("1", .number(1)),
            ("-7", .number(-7)),
            ("1.5", .number(1.5)),
            ("1e3", .number(1000)),
            ("\"\"", .string("")),
            ("\"h\\u00e9\\n\"", .string("hé\n")),
            ("\"true\"", .string("true")),
            ("\"1\"", .string("1")),
            ("[]", .array([])),
            ("{}", .object([:])),
            (
                "[1, \"a\", null, true, [], {}]",
                .array([.number(1), .string("a"), .null, .bool(true), .array([]), .object([:])])
            ),
            ("{\"a\": null}", .object(["a": .null])),
            (
                "{\"a\": {\"b\": [1, {\"c\": false}]}, \"d\": \"e\"}",
                .object(["a": .object(["b": .array([.number(1), .object(["c": .bool(false)])])]), "d": .string("e")])
            ),
        ]
    )
    func decodes(text: String, expected: JSONValue) throws {
        #expect(try Self.decode(text) == expected)
    }

    @Test("numbers are never booleans and booleans never numbers")
    func boolsAndNumbers() throws {
        #expect(try Self.decode("1") == .number(1))
        #expect(try Self.decode("0") == .number(0))
        #expect(try Self.decode("[true, 1, false, 0]") == .array([.bool(true), .number(1), .bool(false), .number(0)]))
    }

    @Test(
        "encodes whole numbers without a fraction",
        arguments: [
            (JSONValue.number(8), "8"),
            (.number(0), "0"),
            (.number(-3), "-3"),
            (.number(50), "50"),
            (.number(68_719_476_736), "68719476736"),
            (.number(999_999_999_999_999), "999999999999999"),
            (.number(1.5), "1.5"),
            (.number(-0.25), "-0.25"),
            (.bool(true), "true"),
            (.bool(false), "false"),
            (.null, "null"),
            (.string("a\"b"), "\"a\\\"b\""),
            (.array([.number(1), .number(2.5), .null]), "[1,2.5,null]"),
            (.object(["b": .number(2), "a": .array([])]), "{\"a\":[],\"b\":2}"),
            (.object(["cpus": .number(8), "gpus": .number(2)]), "{\"cpus\":8,\"gpus\":2}"),
        ]
    )
    func encodes(value: JSONValue, expected: String) throws {
        #expect(try Self.encode(value) == expected)
    }

    static let roundTrips: [JSONValue] = [
        .null, .bool(true), .bool(false), .number(0), .number(42), .number(-1), .number(0.1), .number(1e20),
        .number(-1e-9), .number(1e15), .number(123_456_789_012_345), .string(""), .string("ü 🇰🇪 \u{0}"),
        .array([]), .object([:]),
        .array([.null, .bool(false), .number(3), .string("x"), .array([.array([])]), .object(["k": .null])]),
        .object([
            "name": .string("swahili-asr"),
            "resources": .object(["cpus": .number(8), "memory": .string("64Gi"), "gpus": .number(2)]),
            "command": .array([.string("python3"), .string("train.py")]),
            "retries": .number(2),
            "debug": .bool(false),
            "note": .null,
        ]),
    ]

    @Test("encode then decode gives the same value", arguments: roundTrips)
    func roundTrip(value: JSONValue) throws {
        let data = try JSONEncoder().encode(value)
        #expect(try JSONDecoder().decode(JSONValue.self, from: data) == value)
    }

    @Test("decode then encode gives the same text (sorted keys, whole numbers as integers)")
    func textRoundTrip() throws {
        let text = #"{"a":[1,2.5,null,true,false,"s"],"b":{"c":{"d":[]}},"e":-12,"f":{}}"#
        #expect(try Self.encode(Self.decode(text)) == text)
    }

    @Test(
        "typeName",
        arguments: [
            (JSONValue.null, "null"), (.bool(true), "a boolean"), (.number(1), "a number"), (.string(""), "a string"),
            (.array([]), "a list"), (.object([:]), "a mapping"),
        ]
    )
    func typeName(value: JSONValue, expected: String) {
        #expect(value.typeName == expected)
    }

    @Test("malformed JSON is a decoding error")
    func malformed() {
        for text in ["", "{", "{\"a\" 1}", "nul", "'a'", "[1 2]"] {
            #expect(throws: (any Error).self, "\(text)") { try Self.decode(text) }
        }
    }
}
