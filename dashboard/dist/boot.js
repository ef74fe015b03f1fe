// Starts the dashboard's WebAssembly app (a file of its own: the Content-Security-Policy
// the gateway sends allows no inline script).
import init from "/pkg/dashboard.js";

try {
  await init({ module_or_path: "/pkg/dashboard_bg.wasm" });
  document.getElementById("boot")?.remove();
} catch (e) {
  document.getElementById("boot").innerHTML =
    '<div class="card narrow"><h1>The dashboard could not start</h1><p>' +
    'Its WebAssembly bundle is missing or broken. Build it with <code>just build-dashboard</code>.</p></div>';
  console.error(e);
}
