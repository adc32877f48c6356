/**
 * @module
 * The Upload service: streams videos into storage, records jobs through Metadata, publishes conversion tasks, and
 * serves finished MP3s.
 */
export { createUploadApp, type UploadAppDeps } from "./app.ts";
export { type IncomingFile, type Received, receiveUpload, type StallLimit } from "./receive.ts";
export { createReconciler, type ReconcilerDeps, type ReconcileResult } from "./reconciler.ts";
export { type Accept, type AcceptDeps, createAccept, type StoredInput } from "./accept.ts";
