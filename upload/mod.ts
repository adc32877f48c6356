/**
 * @module
 * The Upload service: streams videos into storage, records jobs through Metadata, publishes conversion tasks, and
 * serves finished MP3s.
 */
export { createUploadApp, type UploadAppDeps } from "./app.ts";
export { type IncomingFile, type Received, receiveUpload, type StallLimit } from "./receive.ts";
export { createReconciler, type ReconcilerDeps, type ReconcileResult } from "./reconciler.ts";
export { type Accept, type AcceptDeps, createAccept, type StoredInput } from "./accept.ts";
export { createUrlImportApp, type UrlImportDeps } from "./url_import.ts";
export { createSweeper, type SweeperDeps } from "./sweeper.ts";
export { createJobControlRoutes, type JobControlDeps } from "./job_control.ts";
export { createTusApp, type TusDeps } from "./tus.ts";
export { createDirectUploadApp, type DirectUploadDeps } from "./direct_upload.ts";
export { createPendingUploadSweeper, type PendingUploadSweeperDeps } from "./pending_upload_sweeper.ts";
