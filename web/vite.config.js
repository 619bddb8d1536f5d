import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";
import tailwindcss from "@tailwindcss/vite";

// Built into web/dist, which the API serves at "/" (and nginx in front of it).
// `npm run dev` proxies the API and its sockets to a local `fleetstream api`.
export default defineConfig({
  plugins: [react(), tailwindcss()],
  build: { chunkSizeWarningLimit: 1000 }, // h3-js (wasm-compiled) is most of it
  server: {
    proxy: {
      "/v1": { target: "http://127.0.0.1:8000", ws: true },
    },
  },
});
