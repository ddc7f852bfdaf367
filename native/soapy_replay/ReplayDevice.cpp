// SoapySDR device module "replay": streams a recording through the real SoapySDR API.
//
// A virtual receiver for rehearsals and for exercising SoapySDR clients end to end without hardware.
// Registered as driver "replay"; device arguments:
//
//   file=PATH            recording to replay (required to make a device). A SigMF "NAME.sigmf-meta" (or
//                        "NAME.sigmf-data") is read with the datatype, sample rate and centre frequency of
//                        its metadata; anything else is raw interleaved I/Q in `format` at `rate`.
//   format=cf32|ci16|cu8|ci8   raw sample format (default: from the SigMF datatype, else from the file
//                        extension .cu8/.ci16/.cs16/.ci8/.cs8, else cf32). Little-endian.
//   rate=HZ              sample rate of a raw file (default 1e6; SigMF: core:sample_rate).
//   freq=HZ              centre frequency reported until the client sets one (default: SigMF
//                        core:frequency of the first capture, else 0).
//   loop=true            restart at the beginning at end of file (device time keeps increasing).
//   realtime=true        pace reads to the sample rate, like a radio; a client that falls more than
//                        `buffer_s` seconds (default 1.0) behind loses the excess: the next read returns
//                        SOAPY_SDR_OVERFLOW and the following ones resume at "now" with an honest timeNs.
//   mtu=N                stream MTU in samples (default 8192).
//   overflow_every=N     fault injection: every Nth readStream call drops `overflow_samples` samples
//                        (default: one MTU) and returns SOAPY_SDR_OVERFLOW.
//   timeout_every=N      fault injection: every Nth readStream call returns SOAPY_SDR_TIMEOUT.
//   time=false           do not report timestamps (no SOAPY_SDR_HAS_TIME), as some cheap radios.
//
// Sample rate: the device replays at the file's rate. setSampleRate() with any other rate throws
// std::runtime_error (the Python bindings raise RuntimeError), so a client never analyses a replay at the
// wrong rate silently. Frequency, gain (overall and "RF"), gain mode, antenna and bandwidth setters store
// their values and the getters return them; they do not change the samples.
//
// Stream: RX only, one channel, formats CF32 (native, full scale 1.0) and CS16 (scaled by 32767, clipped).
// Every read sets SOAPY_SDR_HAS_TIME with timeNs = (index of its first sample) / rate (unless time=false),
// index 0 being the first sample after activateStream. At end of file (no loop) the last read carries
// SOAPY_SDR_END_BURST; later reads wait their timeout and return SOAPY_SDR_TIMEOUT.

#include <SoapySDR/Device.hpp>
#include <SoapySDR/Formats.hpp>
#include <SoapySDR/Logger.hpp>
#include <SoapySDR/Registry.hpp>
#include <SoapySDR/Time.hpp>

#include <algorithm>
#include <chrono>
#include <complex>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

enum class SampleFormat { CF32, CI16, CU8, CI8 };

size_t bytes_per_sample(SampleFormat f) {
    switch (f) {
    case SampleFormat::CF32: return 8;
    case SampleFormat::CI16: return 4;
    case SampleFormat::CU8:
    case SampleFormat::CI8: return 2;
    }
    return 8;
}

SampleFormat parse_format(const std::string &text) {
    std::string t = text;
    std::transform(t.begin(), t.end(), t.begin(), [](unsigned char c) { return std::tolower(c); });
    if (t == "cf32" || t == "cf32_le" || t == "fc32") return SampleFormat::CF32;
    if (t == "ci16" || t == "ci16_le" || t == "cs16" || t == "sc16") return SampleFormat::CI16;
    if (t == "cu8" || t == "cu8_le") return SampleFormat::CU8;
    if (t == "ci8" || t == "ci8_le" || t == "cs8" || t == "sc8") return SampleFormat::CI8;
    throw std::runtime_error("replay: format=" + text + " is not supported; use cf32, ci16, cu8 or ci8");
}

bool ends_with(const std::string &s, const std::string &suffix) {
    return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool truthy(const std::string &v) {
    std::string t = v;
    std::transform(t.begin(), t.end(), t.begin(), [](unsigned char c) { return std::tolower(c); });
    return t == "true" || t == "1" || t == "yes" || t == "on";
}

double parse_double(const std::string &key, const std::string &value) {
    try {
        size_t pos = 0;
        const double v = std::stod(value, &pos);
        if (pos != value.size() || !std::isfinite(v)) throw std::invalid_argument(value);
        return v;
    } catch (const std::exception &) {
        throw std::runtime_error("replay: " + key + "=" + value + " is not a number");
    }
}

long long parse_count(const std::string &key, const std::string &value, long long min_value) {
    const double v = parse_double(key, value);
    if (v < double(min_value) || v != std::floor(v))
        throw std::runtime_error("replay: " + key + "=" + value + " must be an integer >= " +
                                 std::to_string(min_value));
    return static_cast<long long>(v);
}

// Cheap scanning of a SigMF metadata file: the string value of "core:datatype" and the first numeric values
// of "core:sample_rate" and "core:frequency". Enough for the files SigMF writers produce; not a JSON parser.
bool json_find_value(const std::string &json, const std::string &key, std::string &out) {
    const std::string quoted = "\"" + key + "\"";
    const size_t k = json.find(quoted);
    if (k == std::string::npos) return false;
    size_t p = json.find(':', k + quoted.size());
    if (p == std::string::npos) return false;
    ++p;
    while (p < json.size() && std::isspace(static_cast<unsigned char>(json[p]))) ++p;
    if (p >= json.size()) return false;
    if (json[p] == '"') {
        const size_t e = json.find('"', p + 1);
        if (e == std::string::npos) return false;
        out = json.substr(p + 1, e - p - 1);
        return true;
    }
    size_t e = p;
    while (e < json.size() && (std::isdigit(static_cast<unsigned char>(json[e])) || json[e] == '.' ||
                               json[e] == 'e' || json[e] == 'E' || json[e] == '+' || json[e] == '-'))
        ++e;
    if (e == p) return false;
    out = json.substr(p, e - p);
    return true;
}

struct ReplayStream {
    bool cs16 = false;
    bool active = false;
};

class ReplayDevice : public SoapySDR::Device {
  public:
    explicit ReplayDevice(const SoapySDR::Kwargs &args) {
        const auto it = args.find("file");
        if (it == args.end() || it->second.empty())
            throw std::runtime_error("replay: the file=PATH argument is required (a SigMF .sigmf-meta or raw I/Q)");
        std::string path = it->second;
        bool have_format = false;
        if (ends_with(path, ".sigmf-data")) path = path.substr(0, path.size() - 5) + "meta";
        if (ends_with(path, ".sigmf-meta")) {
            read_sigmf_meta(path);
            data_path_ = path.substr(0, path.size() - 4) + "data";
            have_format = true;
        } else {
            data_path_ = path;
            if (ends_with(path, ".cu8")) format_ = SampleFormat::CU8;
            else if (ends_with(path, ".ci16") || ends_with(path, ".cs16")) format_ = SampleFormat::CI16;
            else if (ends_with(path, ".ci8") || ends_with(path, ".cs8")) format_ = SampleFormat::CI8;
        }
        if (args.count("format")) {
            const SampleFormat f = parse_format(args.at("format"));
            if (have_format && f != format_)
                throw std::runtime_error("replay: format=" + args.at("format") +
                                         " contradicts the SigMF core:datatype of " + path);
            format_ = f;
        }
        if (args.count("rate")) {
            const double r = parse_double("rate", args.at("rate"));
            if (have_rate_ && std::abs(r - rate_) > 1e-9 * rate_)
                throw std::runtime_error("replay: rate=" + args.at("rate") + " contradicts the SigMF core:sample_rate " +
                                         std::to_string(rate_) + " of " + path);
            rate_ = r;
        }
        if (!(rate_ > 0.0)) throw std::runtime_error("replay: the sample rate must be positive");
        if (args.count("freq")) frequency_ = parse_double("freq", args.at("freq"));
        loop_ = args.count("loop") && truthy(args.at("loop"));
        realtime_ = args.count("realtime") && truthy(args.at("realtime"));
        has_time_ = !args.count("time") || truthy(args.at("time"));
        if (args.count("buffer_s")) buffer_s_ = parse_double("buffer_s", args.at("buffer_s"));
        if (args.count("mtu")) mtu_ = static_cast<size_t>(parse_count("mtu", args.at("mtu"), 1));
        if (args.count("overflow_every"))
            overflow_every_ = parse_count("overflow_every", args.at("overflow_every"), 1);
        if (args.count("timeout_every")) timeout_every_ = parse_count("timeout_every", args.at("timeout_every"), 1);
        overflow_samples_ = static_cast<long long>(mtu_);
        if (args.count("overflow_samples"))
            overflow_samples_ = parse_count("overflow_samples", args.at("overflow_samples"), 1);

        file_.open(data_path_, std::ios::binary);
        if (!file_) throw std::runtime_error("replay: cannot open " + data_path_);
        file_.seekg(0, std::ios::end);
        const long long n_bytes = static_cast<long long>(file_.tellg());
        file_.seekg(0, std::ios::beg);
        n_samples_ = n_bytes / static_cast<long long>(bytes_per_sample(format_));
        if (n_samples_ == 0) throw std::runtime_error("replay: " + data_path_ + " holds no samples");
        if (n_bytes % static_cast<long long>(bytes_per_sample(format_)) != 0)
            SoapySDR::logf(SOAPY_SDR_WARNING, "replay: %s ends with a partial sample; ignored", data_path_.c_str());
        raw_.resize(mtu_ * bytes_per_sample(format_));
        scratch_.resize(mtu_);
    }

    // -- identification -----------------------------------------------------------------------------------
    std::string getDriverKey() const override { return "replay"; }
    std::string getHardwareKey() const override { return "replay"; }
    SoapySDR::Kwargs getHardwareInfo() const override {
        SoapySDR::Kwargs info;
        info["file"] = data_path_;
        info["n_samples"] = std::to_string(n_samples_);
        info["loop"] = loop_ ? "true" : "false";
        info["realtime"] = realtime_ ? "true" : "false";
        return info;
    }
    size_t getNumChannels(const int direction) const override { return direction == SOAPY_SDR_RX ? 1 : 0; }

    // -- stream ---------------------------------------------------------------------------------------------
    std::vector<std::string> getStreamFormats(const int, const size_t) const override {
        return {SOAPY_SDR_CF32, SOAPY_SDR_CS16};
    }
    std::string getNativeStreamFormat(const int, const size_t, double &fullScale) const override {
        fullScale = 1.0;
        return SOAPY_SDR_CF32;
    }

    SoapySDR::Stream *setupStream(const int direction, const std::string &format, const std::vector<size_t> &channels,
                                  const SoapySDR::Kwargs &) override {
        if (direction != SOAPY_SDR_RX) throw std::runtime_error("replay: only the RX direction can be streamed");
        if (channels.size() > 1 || (channels.size() == 1 && channels[0] != 0))
            throw std::runtime_error("replay: only channel 0 exists");
        if (format != SOAPY_SDR_CF32 && format != SOAPY_SDR_CS16)
            throw std::runtime_error("replay: stream format " + format + " is not supported; use CF32 or CS16");
        std::lock_guard<std::mutex> lock(mutex_);
        if (stream_ != nullptr) throw std::runtime_error("replay: a stream is already set up on this device");
        stream_ = new ReplayStream();
        stream_->cs16 = format == SOAPY_SDR_CS16;
        return reinterpret_cast<SoapySDR::Stream *>(stream_);
    }

    void closeStream(SoapySDR::Stream *stream) override {
        std::lock_guard<std::mutex> lock(mutex_);
        if (reinterpret_cast<ReplayStream *>(stream) == stream_ && stream_ != nullptr) {
            delete stream_;
            stream_ = nullptr;
        }
    }

    size_t getStreamMTU(SoapySDR::Stream *) const override { return mtu_; }

    int activateStream(SoapySDR::Stream *stream, const int flags, const long long, const size_t numElems) override {
        if (flags != 0 || numElems != 0) return SOAPY_SDR_NOT_SUPPORTED;
        std::lock_guard<std::mutex> lock(mutex_);
        ReplayStream *s = reinterpret_cast<ReplayStream *>(stream);
        if (s != stream_ || s == nullptr) return SOAPY_SDR_STREAM_ERROR;
        s->active = true;
        device_index_ = 0;
        file_pos_ = 0;
        eof_ = false;
        n_reads_ = 0;
        file_.clear();
        file_.seekg(0, std::ios::beg);
        t0_ = std::chrono::steady_clock::now();
        return 0;
    }

    int deactivateStream(SoapySDR::Stream *stream, const int flags, const long long) override {
        if (flags != 0) return SOAPY_SDR_NOT_SUPPORTED;
        std::lock_guard<std::mutex> lock(mutex_);
        ReplayStream *s = reinterpret_cast<ReplayStream *>(stream);
        if (s != stream_ || s == nullptr) return SOAPY_SDR_STREAM_ERROR;
        s->active = false;
        return 0;
    }

    int readStream(SoapySDR::Stream *stream, void *const *buffs, const size_t numElems, int &flags, long long &timeNs,
                   const long timeoutUs) override {
        flags = 0;
        timeNs = 0;
        ReplayStream *s = reinterpret_cast<ReplayStream *>(stream);
        if (s == nullptr || s != stream_) return SOAPY_SDR_STREAM_ERROR;
        if (!s->active || eof_) {
            wait_us(timeoutUs);
            return SOAPY_SDR_TIMEOUT;
        }
        ++n_reads_;
        if (timeout_every_ > 0 && n_reads_ % timeout_every_ == 0) {
            wait_us(std::min<long>(timeoutUs, 1000));
            return SOAPY_SDR_TIMEOUT;
        }
        if (overflow_every_ > 0 && n_reads_ % overflow_every_ == 0) {
            skip(overflow_samples_);
            if (eof_) {  // the samples lost ran to the end of the file: the stream ends here
                flags |= SOAPY_SDR_END_BURST;
            }
            return SOAPY_SDR_OVERFLOW;
        }
        long long n_want = static_cast<long long>(std::min(numElems, mtu_));
        if (realtime_) {
            // Samples the "radio" has produced by now; wait for at least one, within the timeout.
            const auto deadline = std::chrono::steady_clock::now() + std::chrono::microseconds(timeoutUs);
            long long available = produced_now() - device_index_;
            while (available <= 0) {
                const auto now = std::chrono::steady_clock::now();
                if (now >= deadline) return SOAPY_SDR_TIMEOUT;
                const long long need_ns = static_cast<long long>(std::ceil(1e9 * double(1 - available) / rate_));
                const auto wake = std::min(deadline, now + std::chrono::nanoseconds(need_ns));
                std::this_thread::sleep_until(wake);
                available = produced_now() - device_index_;
            }
            const long long capacity = static_cast<long long>(buffer_s_ * rate_);
            if (available > capacity) {  // the client was too slow: the device buffer overflowed
                skip(available - capacity / 2);
                return SOAPY_SDR_OVERFLOW;
            }
            n_want = std::min(n_want, available);
        }
        const long long first = device_index_;
        const long long n = read_samples(n_want, buffs[0], s->cs16);
        if (has_time_) {
            flags |= SOAPY_SDR_HAS_TIME;
            timeNs = SoapySDR::ticksToTimeNs(first, rate_);
        }
        if (eof_) flags |= SOAPY_SDR_END_BURST;
        return static_cast<int>(n);
    }

    // -- antenna, gain, frequency, rate, bandwidth: stored values ----------------------------------------
    std::vector<std::string> listAntennas(const int, const size_t) const override { return {"RX"}; }
    void setAntenna(const int, const size_t, const std::string &name) override { antenna_ = name; }
    std::string getAntenna(const int, const size_t) const override { return antenna_; }

    std::vector<std::string> listGains(const int, const size_t) const override { return {"RF"}; }
    bool hasGainMode(const int, const size_t) const override { return true; }
    void setGainMode(const int, const size_t, const bool automatic) override { agc_ = automatic; }
    bool getGainMode(const int, const size_t) const override { return agc_; }
    void setGain(const int, const size_t, const double value) override { gain_db_ = value; }
    void setGain(const int, const size_t, const std::string &, const double value) override { gain_db_ = value; }
    double getGain(const int, const size_t) const override { return gain_db_; }
    double getGain(const int, const size_t, const std::string &) const override { return gain_db_; }
    SoapySDR::Range getGainRange(const int, const size_t) const override { return SoapySDR::Range(0.0, 100.0); }
    SoapySDR::Range getGainRange(const int, const size_t, const std::string &) const override {
        return SoapySDR::Range(0.0, 100.0);
    }

    std::vector<std::string> listFrequencies(const int, const size_t) const override { return {"RF"}; }
    void setFrequency(const int, const size_t, const double frequency, const SoapySDR::Kwargs &) override {
        frequency_ = frequency;
    }
    void setFrequency(const int, const size_t, const std::string &, const double frequency,
                      const SoapySDR::Kwargs &) override {
        frequency_ = frequency;
    }
    double getFrequency(const int, const size_t) const override { return frequency_; }
    double getFrequency(const int, const size_t, const std::string &) const override { return frequency_; }
    SoapySDR::RangeList getFrequencyRange(const int, const size_t) const override {
        return {SoapySDR::Range(0.0, 7.2e9)};
    }
    SoapySDR::RangeList getFrequencyRange(const int, const size_t, const std::string &) const override {
        return {SoapySDR::Range(0.0, 7.2e9)};
    }

    void setSampleRate(const int, const size_t, const double rate) override {
        if (std::abs(rate - rate_) > 1e-9 * rate_) {
            std::ostringstream msg;
            msg << "replay: " << data_path_ << " replays at its own sample rate " << rate_
                << " S/s; setSampleRate(" << rate << ") is not supported";
            throw std::runtime_error(msg.str());
        }
    }
    double getSampleRate(const int, const size_t) const override { return rate_; }
    std::vector<double> listSampleRates(const int, const size_t) const override { return {rate_}; }
    SoapySDR::RangeList getSampleRateRange(const int, const size_t) const override {
        return {SoapySDR::Range(rate_, rate_)};
    }

    void setBandwidth(const int, const size_t, const double bw) override { bandwidth_hz_ = bw; }
    double getBandwidth(const int, const size_t) const override { return bandwidth_hz_ > 0 ? bandwidth_hz_ : rate_; }
    SoapySDR::RangeList getBandwidthRange(const int, const size_t) const override {
        return {SoapySDR::Range(0.0, rate_)};
    }

    bool hasHardwareTime(const std::string &what) const override { return what.empty(); }
    long long getHardwareTime(const std::string &) const override {
        return SoapySDR::ticksToTimeNs(device_index_, rate_);
    }

  private:
    void read_sigmf_meta(const std::string &meta_path) {
        std::ifstream meta(meta_path);
        if (!meta) throw std::runtime_error("replay: cannot open " + meta_path);
        std::stringstream text;
        text << meta.rdbuf();
        const std::string json = text.str();
        std::string value;
        if (!json_find_value(json, "core:datatype", value))
            throw std::runtime_error("replay: " + meta_path + " has no core:datatype");
        format_ = parse_format(value);
        if (json_find_value(json, "core:sample_rate", value)) {
            rate_ = parse_double("core:sample_rate", value);
            have_rate_ = true;
        }
        if (json_find_value(json, "core:frequency", value)) frequency_ = parse_double("core:frequency", value);
    }

    long long produced_now() const {
        const double elapsed_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
        return static_cast<long long>(elapsed_s * rate_);
    }

    static void wait_us(long timeout_us) {
        if (timeout_us > 0) std::this_thread::sleep_for(std::chrono::microseconds(timeout_us));
    }

    // Advance over n samples without delivering them (lost to an overflow).
    void skip(long long n) {
        while (n > 0 && !eof_) {
            const long long left = n_samples_ - file_pos_;
            const long long step = std::min(n, left);
            file_pos_ += step;
            device_index_ += step;
            n -= step;
            if (file_pos_ >= n_samples_) {
                if (loop_) file_pos_ = 0;
                else eof_ = true;
            }
        }
        file_.clear();
        file_.seekg(static_cast<std::streamoff>(file_pos_ * static_cast<long long>(bytes_per_sample(format_))));
    }

    // Read up to n samples into buff (CF32 or CS16); wraps at end of file when looping. Returns the count.
    long long read_samples(long long n, void *buff, bool cs16) {
        long long done = 0;
        const size_t bps = bytes_per_sample(format_);
        while (done < n && !eof_) {
            const long long step = std::min(n - done, n_samples_ - file_pos_);
            file_.read(reinterpret_cast<char *>(raw_.data()), static_cast<std::streamsize>(step * bps));
            const long long got = static_cast<long long>(file_.gcount()) / static_cast<long long>(bps);
            convert(got, done, buff, cs16);
            done += got;
            file_pos_ += got;
            device_index_ += got;
            if (got < step || file_pos_ >= n_samples_) {
                if (loop_) {
                    file_pos_ = 0;
                    file_.clear();
                    file_.seekg(0, std::ios::beg);
                } else {
                    eof_ = true;
                }
            }
        }
        return done;
    }

    void convert(long long n, long long offset, void *buff, bool cs16) {
        float *out = reinterpret_cast<float *>(scratch_.data());
        const unsigned char *raw = raw_.data();
        for (long long i = 0; i < n; ++i) {
            float re = 0.0f, im = 0.0f;
            switch (format_) {
            case SampleFormat::CF32:
                std::memcpy(&re, raw + 8 * i, 4);
                std::memcpy(&im, raw + 8 * i + 4, 4);
                break;
            case SampleFormat::CI16: {
                int16_t a, b;
                std::memcpy(&a, raw + 4 * i, 2);
                std::memcpy(&b, raw + 4 * i + 2, 2);
                re = float(a) / 32768.0f;
                im = float(b) / 32768.0f;
                break;
            }
            case SampleFormat::CU8:
                re = (float(raw[2 * i]) - 127.5f) / 127.5f;
                im = (float(raw[2 * i + 1]) - 127.5f) / 127.5f;
                break;
            case SampleFormat::CI8:
                re = float(static_cast<int8_t>(raw[2 * i])) / 128.0f;
                im = float(static_cast<int8_t>(raw[2 * i + 1])) / 128.0f;
                break;
            }
            out[2 * i] = re;
            out[2 * i + 1] = im;
        }
        if (cs16) {
            int16_t *dst = reinterpret_cast<int16_t *>(buff) + 2 * offset;
            for (long long i = 0; i < 2 * n; ++i) {
                const float v = std::max(-1.0f, std::min(1.0f, out[i])) * 32767.0f;
                dst[i] = static_cast<int16_t>(std::lround(v));
            }
        } else {
            std::memcpy(reinterpret_cast<float *>(buff) + 2 * offset, out, static_cast<size_t>(n) * 8);
        }
    }

    std::string data_path_;
    SampleFormat format_ = SampleFormat::CF32;
    double rate_ = 1e6;
    bool have_rate_ = false;
    double frequency_ = 0.0;
    double gain_db_ = 0.0;
    double bandwidth_hz_ = 0.0;
    bool agc_ = false;
    std::string antenna_ = "RX";
    bool loop_ = false;
    bool realtime_ = false;
    bool has_time_ = true;
    double buffer_s_ = 1.0;
    size_t mtu_ = 8192;
    long long overflow_every_ = 0;
    long long timeout_every_ = 0;
    long long overflow_samples_ = 0;

    std::ifstream file_;
    long long n_samples_ = 0;
    long long file_pos_ = 0;
    long long device_index_ = 0;
    long long n_reads_ = 0;
    bool eof_ = false;
    std::chrono::steady_clock::time_point t0_;
    std::vector<unsigned char> raw_;
    std::vector<std::complex<float>> scratch_;
    ReplayStream *stream_ = nullptr;
    std::mutex mutex_;
};

SoapySDR::KwargsList find_replay(const SoapySDR::Kwargs &args) {
    // Only answer when asked for this driver or given a file, so plain enumeration of real radios never
    // picks the virtual one by accident.
    const auto drv = args.find("driver");
    const bool asked = drv != args.end() && drv->second == "replay";
    const auto file = args.find("file");
    const bool has_file = file != args.end() && !file->second.empty();
    if (drv != args.end() && !asked) return {};
    if (!asked && !has_file) return {};
    SoapySDR::Kwargs result;
    result["driver"] = "replay";
    if (has_file) {
        for (const auto &kv : args) result[kv.first] = kv.second;
        result["label"] = "Replay: " + file->second;
    } else {
        result["label"] = "Replay (give file=PATH)";
    }
    return {result};
}

SoapySDR::Device *make_replay(const SoapySDR::Kwargs &args) { return new ReplayDevice(args); }

SoapySDR::Registry register_replay("replay", &find_replay, &make_replay, SOAPY_SDR_ABI_VERSION);

}  // namespace
