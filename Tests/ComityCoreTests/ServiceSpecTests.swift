import ComityCore
import Foundation
import Testing

/// `service:` of a job file: replicas, restart policy, health check and interval, each error naming its field.
@Suite("ServiceSpec parsing")
struct ServiceSpecTests {
    static func document(kind: String = "inference", service: String?) throws -> JSONValue {
        let block = service.map { ", \"service\": \($0)" } ?? ""
        let text = """
            {"name": "llm", "project": "ke-health", "kind": "\(kind)", "command": ["python3", "-m", "http.server"]\(block)}
            """
        return try JSONDecoder().decode(JSONValue.self, from: Data(text.utf8))
    }

    static func errors(_ result: Result<JobSpec, ValidationFailure>) -> [String] {
        if case .failure(let failure) = result { failure.errors.map(\.description) } else { [] }
    }

    @Test("a full block decodes")
    func full() throws {
        let result = JobSpec.validate(
            try Self.document(service: #"{"replicas": 3, "restart": "on-failure", "health": {"http": "/healthz"}, "health_interval": "10s"}"#))
        let spec = try result.get()
        #expect(spec.service == ServiceSpec(replicas: 3, restart: .onFailure, healthPath: "/healthz", healthIntervalSeconds: 10))
        #expect(spec.isPreemptible == false)
    }

    @Test("a command health check; a number of seconds as the interval")
    func commandCheck() throws {
        let spec = try JobSpec.validate(try Self.document(service: #"{"health": {"command": ["curl", "-f", "localhost"]}, "health_interval": 30}"#)).get()
        #expect(spec.service?.healthCommand == ["curl", "-f", "localhost"])
        #expect(spec.service?.healthPath == nil)
        #expect(spec.service?.healthIntervalSeconds == 30)
        #expect(spec.service?.replicas == 1)
    }

    @Test("kind: inference without service: gets the defaults")
    func defaults() throws {
        let spec = try JobSpec.validate(try Self.document(service: nil)).get()
        #expect(spec.service == ServiceSpec())
        #expect(spec.service?.replicas == 1)
        #expect(spec.service?.restart == .always)
        #expect(spec.service?.healthIntervalSeconds == 5)
    }

    @Test("a batch job has no service, and may not declare one")
    func batchJobs() throws {
        #expect(try JobSpec.validate(try Self.document(kind: "training", service: nil)).get().service == nil)
        #expect(
            Self.errors(JobSpec.validate(try Self.document(kind: "training", service: #"{"replicas": 2}"#)))
                == ["service: only for kind: inference (a service); this job's kind is training"])
    }

    @Test(
        "bad values name their field",
        arguments: [
            (#"{"replicas": 0}"#, "service.replicas: expected 1 to 64, got 0"),
            (#"{"replicas": 65}"#, "service.replicas: expected 1 to 64, got 65"),
            (#"{"replicas": 1.5}"#, "service.replicas: expected 1 to 64, got 1.5"),
            (#"{"replicas": "two"}"#, "service.replicas: expected 1 to 64, got \"two\""),
            (#"{"restart": "sometimes"}"#, "service.restart: expected one of always, on-failure, never, got \"sometimes\""),
            (#"{"health": {"http": "healthz"}}"#, "service.health.http: expected a path starting with \"/\" without spaces (at most 1024 bytes), got \"healthz\""),
            (#"{"health": {"http": "/a", "command": ["true"]}}"#, "service.health: expected one of http or command, not both"),
            (#"{"health": {}}"#, "service.health: expected {http: /path} or {command: [...]}"),
            (#"{"health": "/healthz"}"#, "service.health: expected {http: /path} or {command: [...]}, got a string"),
            (#"{"health": {"tcp": 80}}"#, "service.health.tcp: unknown field; expected one of http, command"),
            (#"{"health_interval": "0s"}"#, "service.health_interval: expected a duration like \"5s\" or \"1m\" from 1s to 1h, got \"0s\""),
            (#"{"health_interval": "2h"}"#, "service.health_interval: expected a duration like \"5s\" or \"1m\" from 1s to 1h, got \"2h\""),
            (#"{"replica": 2}"#, "service.replica: unknown field; did you mean \"replicas\"?"),
            (#"[1]"#, "service: expected a mapping like {replicas: 2, health: {http: /healthz}}, got a list"),
        ])
    func errors(block: String, expected: String) throws {
        let errors = Self.errors(JobSpec.validate(try Self.document(service: block)))
        #expect(errors.contains(expected), "got \(errors)")
    }

    @Test("the spec survives the wire (JSON round trip)")
    func roundTrip() throws {
        let spec = try JobSpec.validate(try Self.document(service: #"{"replicas": 2, "restart": "never", "health": {"http": "/"}}"#)).get()
        let data = try JSONEncoder().encode(spec)
        #expect(try JSONDecoder().decode(JobSpec.self, from: data) == spec)
    }
}
