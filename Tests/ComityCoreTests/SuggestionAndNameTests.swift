import ComityCore
import Testing

@Suite("Suggestion")
struct SuggestionTests {
    static let jobFields = [
        "name", "project", "kind", "command", "env", "resources", "inputs", "outputs", "max_runtime", "retries",
        "priority",
    ]

    @Test(
        "editDistance",
        arguments: [
            ("", "", 0), ("", "abc", 3), ("abc", "", 3), ("abc", "abc", 0), ("kitten", "sitting", 3),
            ("flaw", "lawn", 2), ("comand", "command", 1), ("memroy", "memory", 2), ("gpu", "gpus", 1),
            ("a", "b", 1), ("ab", "ba", 2), ("café", "cafe", 1), ("🇰🇪", "🇰🇪x", 1), ("Name", "name", 1),
            ("intention", "execution", 5),
        ] as [(String, String, Int)]
    )
    func editDistance(a: String, b: String, expected: Int) {
        #expect(Suggestion.editDistance(a, b) == expected)
        #expect(Suggestion.editDistance(b, a) == expected)
    }

    @Test("editDistance is a metric on a sample of words")
    func metric() {
        let words = ["", "a", "ab", "gpus", "gpu_model", "gpu_memory", "memory", "priority", "prority", "kind", "mind"]
        for x in words {
            #expect(Suggestion.editDistance(x, x) == 0)
            for y in words {
                let xy = Suggestion.editDistance(x, y)
                #expect(xy == Suggestion.editDistance(y, x))
                #expect((xy == 0) == (x == y))
                #expect(xy <= max(x.count, y.count))
                #expect(xy >= abs(x.count - y.count))
                for z in words {
                    #expect(xy <= Suggestion.editDistance(x, z) + Suggestion.editDistance(z, y))
                }
            }
        }
    }

    @Test(
        "closest suggests likely typos only",
        arguments: [
            ("comand", "command"), ("commmand", "command"), ("nmae", nil), ("nam", "name"), ("Name", "name"),
            ("PROJECT", "project"), ("projet", "project"), ("kindd", "kind"), ("input", "inputs"),
            ("output", "outputs"), ("max-runtime", "max_runtime"), ("maxruntime", "max_runtime"),
            ("retry", nil), ("retires", "retries"), ("priorty", "priority"), ("resource", "resources"),
            ("envs", "env"), ("zzzz", nil), ("gpus", nil), ("", nil), ("image", nil), ("runtime", nil),
        ] as [(String, String?)]
    )
    func closest(name: String, expected: String?) {
        #expect(Suggestion.closest(to: name, among: Self.jobFields) == expected)
    }

    @Test("closest among resource fields, ties and empty candidate lists")
    func closestOthers() {
        let resourceFields = ["cpus", "memory", "gpus", "gpu_model", "gpu_memory"]
        #expect(Suggestion.closest(to: "gpu", among: resourceFields) == "gpus")
        #expect(Suggestion.closest(to: "cpu", among: resourceFields) == "cpus")
        // "gpu_mem" is 3 edits from both gpu_model and gpu_memory; the earlier candidate wins the tie.
        #expect(Suggestion.closest(to: "gpu_mem", among: resourceFields) == "gpu_model")
        #expect(Suggestion.closest(to: "ram", among: resourceFields) == nil)
        #expect(Suggestion.closest(to: "gpu_modle", among: resourceFields) == "gpu_model")
        #expect(Suggestion.closest(to: "gpu_memroy", among: resourceFields) == "gpu_memory")
        #expect(Suggestion.closest(to: "x", among: [String]()) == nil)
        // On a tie the earlier candidate wins.
        #expect(Suggestion.closest(to: "bat", among: ["cat", "hat"]) == "cat")
        #expect(Suggestion.closest(to: "bat", among: ["hat", "cat"]) == "hat")
        // An exact match beats an earlier near match.
        #expect(Suggestion.closest(to: "gpus", among: ["gpu", "gpus"]) == "gpus")
        // Any sequence works, and the candidate comes back as spelled.
        #expect(Suggestion.closest(to: "training", among: Set(["Training"])) == "Training")
    }
}

@Suite("Name")
struct NameTests {
    @Test(
        "valid names",
        arguments: [
            "a", "Z", "0", "swahili-asr", "kenya_health", "model.v2", "a-b_c.d", "9lives", "a..", "x-", "ALL_CAPS",
            String(repeating: "a", count: 128), "1" + String(repeating: ".", count: 127),
        ]
    )
    func valid(name: String) {
        #expect(Name.isValid(name))
    }

    @Test(
        "invalid names",
        arguments: [
            "", "-a", "_a", ".a", ".", "..", "a b", " a", "a ", "a/b", "a:b", "a@b", "é", "aé", "naïve", "a\n",
            "a\u{301}", "🇰🇪", "ａ", "a\u{0}", String(repeating: "a", count: 129),
        ]
    )
    func invalid(name: String) {
        #expect(!Name.isValid(name))
    }
}
