// The in-page trainer (app/src/worker.rs): the same wasm as the page, in a Web Worker, so the page
// keeps drawing while a CPU training step runs. The page's first message is the run.
import init, { train_worker } from "./longalign_app.js";
const first = new Promise((resolve) => { self.onmessage = (e) => resolve(e.data); });
await init();
train_worker(await first);
