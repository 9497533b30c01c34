// Drives corral with the official ollama JavaScript client, unmodified.
// Usage: node scenario.mjs <scenario> <host> <model>
// Prints one JSON document describing what the client returned; pytest asserts on it.
import { Ollama } from 'ollama'

const [scenario, host, model] = process.argv.slice(2)
const ollama = new Ollama({ host })
const options = { temperature: 0, num_predict: 8 }

const scenarios = {
  async list() {
    const { models } = await ollama.list()
    return { names: models.map((m) => m.name), families: models.map((m) => m.details.family) }
  },

  async 'chat-stream'() {
    const parts = []
    const stream = await ollama.chat({
      model,
      messages: [{ role: 'user', content: 'Say hello.' }],
      stream: true,
      options,
    })
    for await (const part of stream) {
      parts.push(part)
    }
    const last = parts[parts.length - 1]
    return {
      chunks: parts.length,
      content: parts.map((p) => p.message.content).join(''),
      roles: [...new Set(parts.map((p) => p.message.role))],
      done: parts.map((p) => p.done),
      done_reason: last.done_reason,
      eval_count: last.eval_count,
    }
  },

  async generate() {
    const res = await ollama.generate({ model, prompt: 'Once upon a time', stream: false, options })
    return { response: res.response, done: res.done, done_reason: res.done_reason, eval_count: res.eval_count }
  },

  async embed() {
    const res = await ollama.embed({ model, input: ['hello', 'world'] })
    return { model: res.model, count: res.embeddings.length, length: res.embeddings[0].length }
  },

  async pull() {
    const events = []
    const stream = await ollama.pull({ model, insecure: true, stream: true })
    for await (const part of stream) {
      events.push(part)
    }
    return { events }
  },
}

try {
  const result = await scenarios[scenario]()
  process.stdout.write(JSON.stringify(result))
} catch (err) {
  process.stdout.write(JSON.stringify({ error: String(err), status: err.status_code ?? null }))
  process.exitCode = 1
}
