// A Leaflet map over the city's own roads. Tiles are optional (VITE_TILE_URL at build time): these
// machines have no internet, and the platform must still show drivers, zones and roads without them.
import { useEffect, useRef, useState } from "react";
import L from "leaflet";
import { client, ok } from "./api.js";

const TILE_URL = /** @type {any} */ (import.meta).env.VITE_TILE_URL || "";
/** @type {Promise<import("./api.js").Schemas["City"]> | null} */
let cityPromise = null;

function city() {
  cityPromise ??= ok(client.GET("/v1/city"));
  return cityPromise;
}

/** @param {number} limit */
const ROAD_STYLE = (limit) =>
  limit >= 20 ? { color: "#f59e0b", weight: 4 } : limit >= 13 ? { color: "#94a3b8", weight: 3 } : { color: "#cbd5e1", weight: 1.5 };

// ``center`` ("lat,lon", from the page's ?center=) opens the map elsewhere than the demo city.
/**
 * @param {(ll: L.LatLng) => void} onClick
 * @param {string | null | undefined} center
 * @returns {[import("react").RefObject<HTMLDivElement | null>, L.Map | null]}
 */
export function useLeaflet(onClick, center) {
  const ref = useRef(/** @type {HTMLDivElement | null} */ (null));
  const [map, setMap] = useState(/** @type {L.Map | null} */ (null));
  const click = useRef(onClick);
  click.current = onClick;
  useEffect(() => {
    const at = /** @type {L.LatLngTuple} */ (center ? center.split(",").map(Number) : [52.52, 13.405]);
    const m = L.map(/** @type {HTMLDivElement} */ (ref.current), { center: at, zoom: 14, zoomControl: true });
    if (TILE_URL) L.tileLayer(TILE_URL, { maxZoom: 19, attribution: "© OpenStreetMap" }).addTo(m);
    m.on("click", (e) => click.current?.(e.latlng));
    let alive = true;
    city().then((c) => {
      if (!alive) return;
      /** @type {Map<number, { limit: number, lines: L.LatLngTuple[][] }>} */
      const byClass = new Map();
      for (const [u, v, limit] of c.edges) {
        const k = limit >= 20 ? 2 : limit >= 13 ? 1 : 0;
        if (!byClass.has(k)) byClass.set(k, { limit, lines: [] });
        byClass.get(k)?.lines.push([/** @type {L.LatLngTuple} */ (c.nodes[u]), /** @type {L.LatLngTuple} */ (c.nodes[v])]);
      }
      for (const k of [0, 1, 2]) {
        const cls = byClass.get(k);
        if (cls) L.polyline(cls.lines, { ...ROAD_STYLE(cls.limit), interactive: false, className: "road" }).addTo(m);
      }
    });
    setMap(m);
    return () => {
      alive = false;
      m.remove();
    };
  }, [center]);
  return [ref, map];
}

/** @type {Record<string, string>} */
export const STATUS_COLOUR = { online: "#16a34a", busy: "#ea580c", offline: "#64748b" };

/** @param {import("./api.js").Zone} z */
export function zoneLayer(z) {
  const style = { color: "#7c3aed", weight: 2, fillOpacity: 0.08, className: "zone" };
  const layer = z.circle
    ? L.circle([z.circle.center.lat, z.circle.center.lon], { ...style, radius: z.circle.radius_m })
    : L.polygon((z.polygon ?? []).map((p) => [p.lat, p.lon]), style);
  return layer.bindTooltip(z.name);
}

/** @param {L.LatLngExpression} latlng @param {string} label @param {string} colour */
export function pin(latlng, label, colour) {
  return L.circleMarker(latlng, { radius: 8, color: "#0f172a", weight: 2, fillColor: colour, fillOpacity: 1 }).bindTooltip(label, {
    permanent: true,
    direction: "top",
  });
}
