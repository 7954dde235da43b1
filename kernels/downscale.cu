// Strided conv-downscale (kgengine.ops.downscale): one thread per kept output pixel.
//
//   out[b,c,i,j] = sum_{u,v} k[b,u,v] * x[b,c, R(s*i + u - oy), R(s*j + v - ox)]
//
// reflect != 0: oy, ox = kh/2, kw/2 and R is whole-sample reflection (repeated);
// reflect == 0 ("valid"): oy = ox = 0 and every read is inside. Strides of x and k are in
// elements (k_sb = 0 for a kernel shared by the batch); out is contiguous (B, C, oh, ow).
// T accumulates in T (float for float32 input).

__device__ __forceinline__ long long kg_reflect(long long t, long long n) {
    if (n == 1) {
        return 0;
    }
    const long long period = 2 * (n - 1);
    t %= period;
    if (t < 0) {
        t += period;
    }
    return t >= n ? period - t : t;
}

template <typename T>
__global__ void kg_downscale(
    const T* __restrict__ x, long long s_b, long long s_c, long long s_h, long long s_w,
    const T* __restrict__ k, long long k_sb, long long k_su, long long k_sv,
    long long chans, long long height, long long width, long long kh, long long kw,
    long long scale, int reflect, long long out_h, long long out_w, long long total,
    T* __restrict__ out) {
    for (long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x; p < total;
         p += (long long)gridDim.x * blockDim.x) {
        const long long j = p % out_w;
        const long long i = (p / out_w) % out_h;
        const long long c = (p / (out_w * out_h)) % chans;
        const long long b = p / (out_w * out_h * chans);
        const T* xp = x + b * s_b + c * s_c;
        const T* kp = k + b * k_sb;
        long long r0 = scale * i;
        long long c0 = scale * j;
        if (reflect) {
            r0 -= kh / 2;
            c0 -= kw / 2;
        }
        T acc = 0;
        if (r0 >= 0 && c0 >= 0 && r0 + kh <= height && c0 + kw <= width) {
            for (long long u = 0; u < kh; ++u) {
                const T* row = xp + (r0 + u) * s_h + c0 * s_w;
                const T* ku = kp + u * k_su;
                for (long long v = 0; v < kw; ++v) {
                    acc += ku[v * k_sv] * row[v * s_w];
                }
            }
        } else {
            for (long long u = 0; u < kh; ++u) {
                const T* row = xp + kg_reflect(r0 + u, height) * s_h;
                const T* ku = kp + u * k_su;
                for (long long v = 0; v < kw; ++v) {
                    acc += ku[v * k_sv] * row[kg_reflect(c0 + v, width) * s_w];
                }
            }
        }
        out[p] = acc;
    }
}
