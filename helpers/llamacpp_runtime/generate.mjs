// Greedy generation with llama.cpp (node-llama-cpp's prebuilt CPU binaries), for helpers/llamacpp.py.
// Reads one JSON request on stdin:
//   {"model": "base.gguf", "lora": "adapter.gguf" | null, "prompts": ["text" | [token ids], ...],
//    "maxTokens": 64, "contextSize": 1024, "threads": 2}
// Text prompts are tokenized with special tokens parsed (a prompt already rendered with the chat template).
// Writes one JSON object on stdout: {"answers": [{"tokens": [...], "text": "...", "stopped": true}, ...]},
// where `stopped` means generation ended at an end-of-generation token (EOS / end of turn) before maxTokens.
import {getLlama} from "node-llama-cpp";

async function readStdin() {
    const chunks = [];
    for await (const chunk of process.stdin) chunks.push(chunk);
    return JSON.parse(Buffer.concat(chunks).toString("utf8"));
}

const request = await readStdin();
const llama = await getLlama({gpu: false, build: "never", progressLogs: false, logLevel: "error"});
const model = await llama.loadModel({modelPath: request.model});
const context = await model.createContext({
    contextSize: request.contextSize ?? 1024,
    threads: request.threads ?? 2,
    ...(request.lora ? {lora: {adapters: [{filePath: request.lora}]}} : {}),
});
const sequence = context.getSequence();
const answers = [];
for (const prompt of request.prompts) {
    await sequence.clearHistory();
    const input = Array.isArray(prompt) ? prompt : model.tokenize(prompt, true);
    const tokens = [];
    let stopped = false;
    for await (const token of sequence.evaluate(input, {temperature: 0, yieldEogToken: true})) {
        if (model.isEogToken(token)) {
            stopped = true;
            break;
        }
        tokens.push(token);
        if (tokens.length >= (request.maxTokens ?? 64)) break;
    }
    answers.push({tokens, text: model.detokenize(tokens), stopped});
}
await context.dispose();
await model.dispose();
process.stdout.write(JSON.stringify({answers}) + "\n");
