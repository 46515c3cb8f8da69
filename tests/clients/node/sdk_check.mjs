// Drives the `openai` npm package against the gateway; prints one JSON object of results.
// Inputs (environment): GATEWAY_URL, API_KEY, LIMITED_KEY (a key allowed one request), SLUG.
import OpenAI from "openai";

const { GATEWAY_URL, API_KEY, LIMITED_KEY, SLUG } = process.env;
const messages = [{ role: "user", content: "hello from node" }];
const client = (apiKey) => new OpenAI({ baseURL: `${GATEWAY_URL}/v1`, apiKey, maxRetries: 0 });

async function failure(call) {
  try {
    await call();
    return { raised: null };
  } catch (error) {
    return { raised: error.constructor.name, status: error.status ?? null, code: error.code ?? null, type: error.type ?? null };
  }
}

const good = client(API_KEY);
const completion = await good.chat.completions.create({ model: SLUG, messages, max_tokens: 3 });
const stream = await good.chat.completions.create({ model: SLUG, messages, max_tokens: 4, stream: true });
const chunks = [];
for await (const chunk of stream) chunks.push(chunk);
const withUsage = await good.chat.completions.create({
  model: SLUG, messages, max_tokens: 2, stream: true, stream_options: { include_usage: true },
});
const usageChunks = [];
for await (const chunk of withUsage) usageChunks.push(chunk);
const raw = await good.chat.completions.create({ model: SLUG, messages }).withResponse();
const text = await good.completions.create({ model: SLUG, prompt: "hi", max_tokens: 2 });
// The fake upstream only speaks floats; the SDK would ask for base64 by default.
const embedding = await good.embeddings.create({ model: SLUG, input: "hi", encoding_format: "float" });
const models = await good.models.list();
const { data: response, response: responseHttp } = await good.responses
  .create({ model: SLUG, input: "hello from node", max_output_tokens: 3 })
  .withResponse();
const { data: responseStream, response: responseStreamHttp } = await good.responses
  .create({ model: SLUG, input: "hello from node", max_output_tokens: 32, stream: true, fake: { tokens: 5 } })
  .withResponse();
const responseEvents = [];
for await (const event of responseStream) responseEvents.push(event);
const completedEvent = responseEvents.at(-1);
const limited = client(LIMITED_KEY);
await limited.chat.completions.create({ model: SLUG, messages });

const results = {
  completion: { model: completion.model, content: completion.choices[0].message.content, usage: completion.usage },
  stream: {
    models: [...new Set(chunks.map((c) => c.model))],
    text: chunks.map((c) => c.choices[0]?.delta?.content ?? "").join(""),
    usageChunk: chunks.some((c) => c.choices.length === 0),
  },
  streamWithUsage: { last: usageChunks.at(-1) },
  requestId: raw.response.headers.get("x-request-id"),
  text: { model: text.model, text: text.choices[0].text },
  embedding: { model: embedding.model, dims: embedding.data[0].embedding.length },
  models: models.data.map((m) => m.id),
  response: { model: response.model, text: response.output_text, usage: response.usage },
  responseRequestIds: [responseHttp.headers.get("x-request-id"), responseStreamHttp.headers.get("x-request-id")],
  responseStream: {
    text: responseEvents.filter((e) => e.type === "response.output_text.delta").map((e) => e.delta).join(""),
    last: completedEvent.type,
    model: completedEvent.response.model,
    outputTokens: completedEvent.response.usage.output_tokens,
  },
  errors: {
    badKey: await failure(() => client("sky_000000000000.not-a-real-key-0000000000000000").chat.completions.create({ model: SLUG, messages })),
    unknownModel: await failure(() => good.chat.completions.create({ model: "acme/missing", messages })),
    badMetadata: await failure(() => good.chat.completions.create({ model: SLUG, messages }, { headers: { "X-Request-Metadata": "[1" } })),
    rateLimited: await failure(() => limited.chat.completions.create({ model: SLUG, messages })),
    rateLimitedStream: await failure(async () => {
      const s = await limited.chat.completions.create({ model: SLUG, messages, stream: true });
      for await (const _ of s);
    }),
    brokenStream: await failure(async () => {
      const s = await good.chat.completions.create({ model: SLUG, messages, stream: true, max_tokens: 10 }, { headers: { "x-fake-drop-after": "2" } });
      for await (const _ of s);
    }),
  },
};
process.stdout.write(JSON.stringify(results));
